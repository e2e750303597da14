//! A minimal HTTP/1.1 client for checks and readiness probes against 127.0.0.1:
//! one `GET` with `Connection: close`, response bodies framed by `Content-Length`,
//! `Transfer-Encoding: chunked` or connection close (RFC 9112 §6.3), capped in size.
//!
//! Shared by guest-init (checks inside the guest) and builder (`from = "host"` checks,
//! through a forwarded port on the host's 127.0.0.1), so both judge a response with the
//! same [`judge_response`] and say the same thing about it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response we read (headers plus body).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Decoded body.
    pub body: Vec<u8>,
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The status line is not `HTTP/1.x NNN ...`.
    StatusLine,
    /// A header line has no colon, or a framing header has a bad value.
    Header,
    /// A chunk size line is not hexadecimal or the chunk is not followed by CRLF.
    Chunk,
    /// The response is larger than [`MAX_RESPONSE`].
    TooLarge,
    /// The connection closed before the response was complete.
    Truncated,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpError::StatusLine => "malformed HTTP status line",
            HttpError::Header => "malformed HTTP header",
            HttpError::Chunk => "malformed chunked body",
            HttpError::TooLarge => "HTTP response larger than 1 MiB",
            HttpError::Truncated => "connection closed before the response was complete",
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses `buf`; `Ok(None)` means "need more bytes" (only possible while `eof` is false).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, HttpError> {
    if buf.len() > MAX_RESPONSE {
        return Err(HttpError::TooLarge);
    }
    let incomplete = || {
        if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        }
    };
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return incomplete();
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| HttpError::Header)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HttpError::StatusLine);
    }
    let status: u16 = code.parse().map_err(|_| HttpError::StatusLine)?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| HttpError::Header)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let body = &buf[head_end + 4..];
    // 1xx, 204 and 304 have no body (RFC 9112 §6.3 rule 1).
    if status / 100 == 1 || status == 204 || status == 304 {
        return Ok(Some(HttpResponse {
            status,
            body: Vec::new(),
        }));
    }
    if chunked {
        return match decode_chunked(body)? {
            Some(body) => Ok(Some(HttpResponse { status, body })),
            None => incomplete(),
        };
    }
    match content_length {
        Some(len) if body.len() >= len => Ok(Some(HttpResponse {
            status,
            body: body[..len].to_vec(),
        })),
        Some(_) => incomplete(),
        None if eof => Ok(Some(HttpResponse {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// Decodes a chunked body; `Ok(None)` if it is not complete yet.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| HttpError::Chunk)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Chunk)?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers end with an empty line; we ignore them but wait for the end.
            return Ok(find(data, b"\r\n").map(|_| body));
        }
        if size > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(HttpError::Chunk);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// At most `max` characters of `text`, with `...` when cut.
#[must_use]
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}...")
}

/// The verdict of an HTTP check on `response`: `Ok(what was seen)` when the status is
/// `status` and the body contains `body_contains`, else `Err(what was expected, what was
/// seen)`.
///
/// # Errors
///
/// The mismatch, as the detail of a failed check.
pub fn judge_response(
    response: &HttpResponse,
    status: u16,
    body_contains: Option<&str>,
) -> Result<String, String> {
    let body = String::from_utf8_lossy(&response.body);
    if response.status != status {
        Err(format!(
            "expected status {status}, got {}: {}",
            response.status,
            shorten(&body, 200)
        ))
    } else if let Some(needle) = body_contains.filter(|n| !body.contains(n)) {
        Err(format!(
            "body does not contain `{needle}`: {}",
            shorten(&body, 200)
        ))
    } else {
        Ok(format!(
            "status {}, {} bytes",
            response.status,
            response.body.len()
        ))
    }
}

/// `GET path` on 127.0.0.1:`port` within `timeout`.
///
/// # Errors
///
/// What went wrong (connect, send, read, a malformed or too large response), as text for
/// a check's detail.
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: jeos-init\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete response from {addr} within {timeout:?}"
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the response from {addr}: {e}")),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf, n == 0) {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloEXTRA";
        assert_eq!(
            parse_response(raw, false),
            Ok(Some(HttpResponse {
                status: 200,
                body: b"hello".to_vec()
            }))
        );
        assert_eq!(parse_response(&raw[..40], false), Ok(None));
        assert_eq!(parse_response(&raw[..40], true), Err(HttpError::Truncated));
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n\
                    5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\n\r\n";
        let response = parse_response(raw, false)
            .expect("valid")
            .expect("complete");
        assert_eq!((response.status, response.body), (404, b"hello!".to_vec()));
        assert_eq!(parse_response(&raw[..raw.len() - 2], false), Ok(None));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse_response(bad, false), Err(HttpError::Chunk));
        let no_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n";
        assert_eq!(parse_response(no_crlf, false), Err(HttpError::Chunk));
    }

    #[test]
    fn close_delimited_and_bodyless() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(
            parse_response(raw, true)
                .expect("valid")
                .expect("complete")
                .body,
            b"all of it"
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_response(empty, false)
                .expect("valid")
                .expect("complete")
                .status,
            204
        );
    }

    #[test]
    fn judges_status_and_body() {
        let response = HttpResponse {
            status: 200,
            body: b"hello from jeos".to_vec(),
        };
        assert_eq!(
            judge_response(&response, 200, Some("jeos")),
            Ok("status 200, 15 bytes".to_owned())
        );
        assert_eq!(
            judge_response(&response, 404, None),
            Err("expected status 404, got 200: hello from jeos".to_owned())
        );
        assert_eq!(
            judge_response(&response, 200, Some("nope")),
            Err("body does not contain `nope`: hello from jeos".to_owned())
        );
        assert_eq!(shorten("abcdef", 3), "abc...");
    }

    #[test]
    fn malformed_responses() {
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(HttpError::StatusLine)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", false),
            Err(HttpError::StatusLine)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nbad\r\n\r\n", false),
            Err(HttpError::Header)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(HttpError::Header)
        );
        let big = vec![b'a'; MAX_RESPONSE + 1];
        assert_eq!(parse_response(&big, false), Err(HttpError::TooLarge));
        let huge_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n";
        assert_eq!(parse_response(huge_chunk, false), Err(HttpError::TooLarge));
    }
}
