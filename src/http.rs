//! Plain HTTP: the responses an application gives to requests that are not upgrades
//! (through the routes set with [`crate::Server::http`]) and to upgrades it refuses
//! (from [`crate::Handler::on_upgrade`]).
//!
//! The server speaks HTTP only to hand out such answers: every response closes the
//! connection.

use crate::protocol::handshake::{http_response, PlainRequest};
use std::sync::Arc;

/// A plain HTTP request (no upgrade), as the routes see it.
pub type HttpRequest = PlainRequest;

/// The routes: an answer for every plain HTTP request. Shared by all workers.
pub(crate) type Routes = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// An HTTP response: a status, headers and a body.
///
/// ```
/// # use wsreactor::HttpResponse;
/// let denied = HttpResponse::new(401)
///     .header("WWW-Authenticate", "Bearer")
///     .text("a token is required\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    content_type: String,
    body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status` (a three-digit code; anything else is sent as 500)
    /// and an empty body.
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8".into(),
            body: Vec::new(),
        }
    }

    /// `404 Not Found`, what requests get when no routes are set.
    pub fn not_found() -> Self {
        Self::new(404).text("not found\n")
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Adds a header. `Content-Type`, `Content-Length` and `Connection` are always
    /// written by the server; a header whose name is not a token or whose value holds
    /// control characters (CR/LF would forge headers) is left out.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a `text/plain; charset=utf-8` body.
    pub fn text(self, body: impl Into<String>) -> Self {
        self.body("text/plain; charset=utf-8", body.into().into_bytes())
    }

    /// Sets a body and its `Content-Type`.
    pub fn body(mut self, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type.into();
        self.body = body.into();
        self
    }

    /// The bytes on the wire; without the body for a `HEAD` request, which gets the
    /// headers `GET` would get (RFC 9110 §9.3.2).
    pub(crate) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut out = http_response(self.status, &headers, &self.content_type, &self.body);
        if head_only {
            out.truncate(out.len() - self.body.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_response_has_the_get_headers_and_no_body() {
        let response = HttpResponse::new(200).text("hello\n");
        let get = response.to_bytes(false);
        let head = response.to_bytes(true);
        assert!(get.ends_with(b"\r\n\r\nhello\n"));
        assert!(head.ends_with(b"Content-Length: 6\r\nConnection: close\r\n\r\n"));
        assert_eq!(&get[..head.len()], &head[..]);
    }

    #[test]
    fn headers_that_could_forge_others_are_left_out() {
        let bytes = HttpResponse::new(403)
            .header("X-Reason", "origin\r\nSet-Cookie: evil=1")
            .header("X-Ok", "yes")
            .to_bytes(false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("X-Ok: yes\r\n"));
        assert!(!text.contains("evil"));
    }
}
