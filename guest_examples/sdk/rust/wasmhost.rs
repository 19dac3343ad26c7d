//! wasmhost guest SDK for Rust (ABI v1, core modules). No external crates: Debian's rustc 1.63
//! with the wasm32 std is what builds here. Include it as a module:
//!
//!     #[path = "../sdk/rust/wasmhost.rs"]
//!     mod wasmhost;
//!
//! Host calls return `Result<_, Error>`; `Error::code()` gives the ABI number back. `json` is a
//! small, strict JSON reader and string escaper (enough for inputs and send reports). A panic is
//! logged with its message and location before it traps (`install_panic_hook`).
#![allow(dead_code)]

mod raw {
    #[link(wasm_import_module = "wasmhost")]
    extern "C" {
        pub fn input_len() -> i32;
        pub fn input_read(buf: *mut u8, cap: usize) -> i32;
        pub fn output_write(ptr: *const u8, len: usize) -> i32;
        pub fn log(level: i32, ptr: *const u8, len: usize) -> i32;
        pub fn push_send_to_user(user: *const u8, user_len: usize, msg: *const u8, msg_len: usize) -> i32;
        pub fn push_wait(ticket: i32, out: *mut u8, cap: usize) -> i32;
    }
}

/// ABI v1 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Invalid,
    Fault,
    TooBig,
    NotConfigured,
    RateLimited,
    Timeout,
    Unavailable,
    Limit,
    Unknown(i32),
}

impl Error {
    pub fn from_code(code: i32) -> Error {
        match code {
            -1 => Error::Invalid,
            -2 => Error::Fault,
            -3 => Error::TooBig,
            -4 => Error::NotConfigured,
            -5 => Error::RateLimited,
            -6 => Error::Timeout,
            -7 => Error::Unavailable,
            -8 => Error::Limit,
            other => Error::Unknown(other),
        }
    }

    /// The ABI number (for logs, or to return from `handle`).
    pub fn code(self) -> i32 {
        match self {
            Error::Invalid => -1,
            Error::Fault => -2,
            Error::TooBig => -3,
            Error::NotConfigured => -4,
            Error::RateLimited => -5,
            Error::Timeout => -6,
            Error::Unavailable => -7,
            Error::Limit => -8,
            Error::Unknown(code) => code,
        }
    }
}

fn check(rc: i32) -> Result<usize, Error> {
    if rc >= 0 {
        Ok(rc as usize)
    } else {
        Err(Error::from_code(rc))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Notice = 2,
    Warn = 3,
    Error = 4,
}

/// Makes a panic explain itself: the hook logs `panic: panicked at '<message>', src/lib.rs:8:59` at
/// error level before the trap (with `panic=abort` the trap follows at once). Every SDK entry point
/// installs it, so a function that reads its input first is covered from its first line; call it
/// yourself at the top of `handle` to cover code that runs before any SDK call.
pub fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = format!("panic: {}", info);
            unsafe { raw::log(Level::Error as i32, text.as_ptr(), text.len()) };
        }));
    });
}

/// The whole invocation input.
pub fn input() -> Vec<u8> {
    install_panic_hook();
    let n = unsafe { raw::input_len() }.max(0) as usize;
    let mut buf = vec![0u8; n];
    let got = unsafe { raw::input_read(buf.as_mut_ptr(), buf.len()) }.max(0) as usize;
    buf.truncate(got);
    buf
}

/// Appends to the invocation output; `Err(Error::Limit)` once the output cap is reached.
pub fn output(text: &str) -> Result<(), Error> {
    install_panic_hook();
    check(unsafe { raw::output_write(text.as_ptr(), text.len()) }).map(|_| ())
}

/// Records a log line; a full log budget is not the guest's problem, so the result is dropped.
pub fn log(level: Level, message: &str) {
    unsafe { raw::log(level as i32, message.as_ptr(), message.len()) };
}

/// An accepted send.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(i32);

/// Starts sending `message_json` to every device of `user` in this namespace; returns once it is committed.
pub fn send(user: &str, message_json: &str) -> Result<Ticket, Error> {
    install_panic_hook();
    let rc = unsafe { raw::push_send_to_user(user.as_ptr(), user.len(), message_json.as_ptr(), message_json.len()) };
    check(rc).map(|t| Ticket(t as i32))
}

impl Ticket {
    /// Blocks until the send is finished and returns its JSON report.
    pub fn wait(self) -> Result<String, Error> {
        let mut buf = vec![0u8; 1024];
        let mut n = check(unsafe { raw::push_wait(self.0, buf.as_mut_ptr(), buf.len()) })?;
        if n > buf.len() {
            // snprintf rule: the report is longer than the buffer; waiting again is free.
            buf = vec![0u8; n];
            n = check(unsafe { raw::push_wait(self.0, buf.as_mut_ptr(), buf.len()) })?;
        }
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| Error::Invalid)
    }

    /// Waits and parses the report's summary.
    pub fn wait_report(self) -> Result<Report, Error> {
        let text = self.wait()?;
        let doc = json::parse(&text).map_err(|_| Error::Invalid)?;
        Ok(Report {
            ok: doc.get("ok").and_then(json::Value::as_bool).unwrap_or(false),
            devices_attempted: doc.get("devices_attempted").and_then(json::Value::as_u64).unwrap_or(0),
            devices_succeeded: doc.get("devices_succeeded").and_then(json::Value::as_u64).unwrap_or(0),
        })
    }
}

/// The summary fields of a send report.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub ok: bool,
    pub devices_attempted: u64,
    pub devices_succeeded: u64,
}

pub mod json {
    //! A strict JSON reader (RFC 8259) into `Value`, and a string escaper. Nesting is bounded.
    use std::collections::BTreeMap;

    const MAX_DEPTH: usize = 64;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(BTreeMap<String, Value>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(map) => map.get(key),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_bool(&self) -> Option<bool> {
            match self {
                Value::Bool(b) => Some(*b),
                _ => None,
            }
        }
        pub fn as_u64(&self) -> Option<u64> {
            match self {
                Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
                _ => None,
            }
        }
        pub fn as_array(&self) -> Option<&Vec<Value>> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ParseError(pub usize);

    pub fn parse(text: &str) -> Result<Value, ParseError> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(ParseError(p.i));
        }
        Ok(v)
    }

    /// `s` as a JSON string literal, quotes included.
    pub fn quote(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Parser<'a> {
        fn err<T>(&self) -> Result<T, ParseError> {
            Err(ParseError(self.i))
        }
        fn ws(&mut self) {
            while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> Result<(), ParseError> {
            self.ws();
            if self.i < self.s.len() && self.s[self.i] == c {
                self.i += 1;
                Ok(())
            } else {
                self.err()
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }
        fn literal(&mut self, word: &str, v: Value) -> Result<Value, ParseError> {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                self.err()
            }
        }
        fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
            if depth > MAX_DEPTH {
                return self.err();
            }
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    let mut map = BTreeMap::new();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Value::Object(map));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.eat(b':')?;
                        let v = self.value(depth + 1)?;
                        map.entry(key).or_insert(v);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Object(map));
                            }
                            _ => return self.err(),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut items = Vec::new();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return self.err(),
                        }
                    }
                }
                Some(b'"') => Ok(Value::String(self.string()?)),
                Some(b't') => self.literal("true", Value::Bool(true)),
                Some(b'f') => self.literal("false", Value::Bool(false)),
                Some(b'n') => self.literal("null", Value::Null),
                Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
                _ => self.err(),
            }
        }
        fn number(&mut self) -> Result<Value, ParseError> {
            let start = self.i;
            while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| ParseError(start))?;
            text.parse::<f64>().map(Value::Number).map_err(|_| ParseError(start))
        }
        fn hex4(&mut self) -> Result<u32, ParseError> {
            if self.i + 4 > self.s.len() {
                return self.err();
            }
            let text = std::str::from_utf8(&self.s[self.i..self.i + 4]).map_err(|_| ParseError(self.i))?;
            let v = u32::from_str_radix(text, 16).map_err(|_| ParseError(self.i))?;
            self.i += 4;
            Ok(v)
        }
        fn string(&mut self) -> Result<String, ParseError> {
            if self.s.get(self.i) != Some(&b'"') {
                return self.err();
            }
            self.i += 1;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let c = match self.s.get(self.i) {
                    Some(c) => *c,
                    None => return self.err(),
                };
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).map_err(|_| ParseError(self.i)),
                    b'\\' => {
                        let e = match self.s.get(self.i) {
                            Some(e) => *e,
                            None => return self.err(),
                        };
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let mut cp = self.hex4()?;
                                if (0xD800..0xDC00).contains(&cp) {
                                    if self.s.get(self.i) != Some(&b'\\') || self.s.get(self.i + 1) != Some(&b'u') {
                                        return self.err();
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return self.err();
                                    }
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                }
                                match char::from_u32(cp) {
                                    Some(ch) => ch,
                                    None => return self.err(),
                                }
                            }
                            _ => return self.err(),
                        };
                        let mut tmp = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                    }
                    c if c < 0x20 => return self.err(),
                    c => out.push(c),
                }
            }
        }
    }
}
