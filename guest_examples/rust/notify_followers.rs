//! notify-followers in Rust with the wasmhost SDK (std, no external crates).
//!
//! Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
//! Output: {"sent": n, "failed": m, "no_devices": k}
//! Every send is started before any is awaited, so deliveries run concurrently on the host.

#[path = "../sdk/rust/wasmhost.rs"]
mod wasmhost;

use wasmhost::json::{self, Value};
use wasmhost::Level;

const BAD_INPUT: i32 = 1; // handle's own error code: the input is not what this function expects

struct Request {
    author: String,
    followers: Vec<String>,
    text: String,
}

fn parse_request(input: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(input).map_err(|_| "input is not UTF-8".to_string())?;
    let doc = json::parse(text).map_err(|e| format!("input is not JSON (at byte {})", e.0))?;
    let author = doc.get("author").and_then(Value::as_str).ok_or("\"author\" must be a string")?;
    let body = doc.get("text").and_then(Value::as_str).ok_or("\"text\" must be a string")?;
    let mut followers = Vec::new();
    for item in doc.get("followers").and_then(Value::as_array).ok_or("\"followers\" must be a list")? {
        followers.push(item.as_str().ok_or("\"followers\" must be a list of strings")?.to_string());
    }
    Ok(Request { author: author.to_string(), followers, text: body.to_string() })
}

#[no_mangle]
pub extern "C" fn handle() -> i32 {
    let req = match parse_request(&wasmhost::input()) {
        Ok(req) => req,
        Err(why) => {
            wasmhost::log(Level::Error, &format!("bad input: {}", why));
            return BAD_INPUT;
        }
    };
    let message = format!(
        "{{\"title\":{},\"body\":{},\"data\":{{\"author\":{}}}}}",
        json::quote(&format!("{} posted", req.author)),
        json::quote(&req.text),
        json::quote(&req.author)
    );
    // Send all first (each returns at once with a ticket), then wait for each.
    let tickets: Vec<_> = req.followers.iter().map(|user| wasmhost::send(user, &message)).collect();
    let (mut sent, mut failed, mut no_devices) = (0u32, 0u32, 0u32);
    for (user, ticket) in req.followers.iter().zip(tickets) {
        let report = match ticket.and_then(|t| t.wait_report()) {
            Ok(report) => report,
            Err(err) => {
                wasmhost::log(Level::Warn, &format!("send to {} failed: code {}", user, err.code()));
                failed += 1;
                continue;
            }
        };
        if report.devices_attempted == 0 {
            no_devices += 1;
        } else if report.ok && report.devices_succeeded > 0 {
            sent += 1;
        } else {
            failed += 1;
        }
    }
    let summary = format!("{{\"sent\":{},\"failed\":{},\"no_devices\":{}}}", sent, failed, no_devices);
    let _ = wasmhost::output(&summary);
    0
}
