//! __NAME__ — a wasmhost function: pushes `text` to `user`'s devices and says how many got it.
//!
//! input:  {"user": "alice", "text": "Your order A-17 has shipped"}
//! output: notified alice: 1/1 devices
//! return: 0 ok, 1 bad input, 2 the send failed (logged)
//!
//! On wasm32-unknown-unknown there is no clock, file system or environment: `SystemTime::now()`
//! panics. A panic is logged with its message and location (the SDK's hook), then traps.

mod wasmhost;

use wasmhost::json::{self, Value};
use wasmhost::Level;

fn parse_input(input: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8".to_string())?;
    let doc = json::parse(text).map_err(|e| format!("the input is not JSON (at byte {})", e.0))?;
    let user = doc.get("user").and_then(Value::as_str).ok_or("\"user\" must be a string")?;
    let body = doc.get("text").and_then(Value::as_str).ok_or("\"text\" must be a string")?;
    Ok((user.to_string(), body.to_string()))
}

#[no_mangle]
pub extern "C" fn handle() -> i32 {
    let (user, text) = match parse_input(&wasmhost::input()) {
        Ok(parsed) => parsed,
        Err(why) => {
            wasmhost::log(Level::Error, &format!("bad input: {}", why));
            return 1;
        }
    };
    let message = format!("{{\"title\":\"__NAME__\",\"body\":{}}}", json::quote(&text));
    match wasmhost::send(&user, &message).and_then(|ticket| ticket.wait_report()) {
        Ok(report) => {
            let line = format!("notified {}: {}/{} devices", user, report.devices_succeeded, report.devices_attempted);
            let _ = wasmhost::output(&line);
            0
        }
        Err(err) => {
            wasmhost::log(Level::Error, &format!("send to {} failed: code {}", user, err.code()));
            2
        }
    }
}
