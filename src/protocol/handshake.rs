//! The opening handshake (RFC 6455 §4), sans-IO.
//!
//! A WebSocket connection starts life as HTTP/1.1. The client sends a `GET` with
//! `Upgrade: websocket`, `Connection: Upgrade`, a random 16-byte nonce in
//! `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13` (§4.1). The server checks those
//! headers (§4.2.1) and, if it agrees, answers `101 Switching Protocols` with
//! `Sec-WebSocket-Accept` = base64(SHA-1(key + [`WEBSOCKET_GUID`])) (§4.2.2), which
//! proves it understood the WebSocket handshake rather than being a confused HTTP
//! server. From the byte after the blank line that ends each head, both sides speak
//! frames (§5).
//!
//! This module only turns bytes into a [`Request`] and builds response bytes; the
//! reactor reads and writes the socket. Requests that carry none of the WebSocket
//! headers are returned as [`Request::Plain`] so the server can answer them itself
//! (demo page, health check, 404).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::fmt;

/// The fixed GUID the server appends to the client's key before hashing
/// (RFC 6455 §1.3, §4.2.2 item 5.4). It is unlikely to be used by anything that does
/// not understand WebSocket, so a correct `Sec-WebSocket-Accept` proves the server
/// speaks the protocol.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How many header fields a request head may carry. httparse needs a fixed slot array;
/// a browser sends about 15, so 64 is generous, and more is answered with 431.
const MAX_HEADERS: usize = 64;

/// Computes `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`
/// (RFC 6455 §4.2.2 item 5.4): base64(SHA-1(key + GUID)).
///
/// The key is hashed as the exact string the client sent (after trimming surrounding
/// whitespace), *not* its base64-decoded bytes.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// The outcome of feeding a (possibly incomplete) request head to [`parse_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The blank line that ends the head has not arrived yet: append more bytes to the
    /// buffer and call again.
    Partial,
    /// The head is complete.
    Complete {
        /// What the client asked for.
        request: Request,
        /// Bytes of the head, including the final `\r\n\r\n`. Bytes after it (the
        /// client may send its first frame in the same packet) are not part of the
        /// handshake: hand `buf[head_len..]` to the frame decoder.
        head_len: usize,
    },
}

/// A complete, validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket opening handshake (RFC 6455 §4.2.1): answer it with
    /// [`switching_protocols`].
    Upgrade(UpgradeRequest),
    /// An ordinary HTTP request, which carries none of `Upgrade`, `Sec-WebSocket-Key`
    /// or `Sec-WebSocket-Version`. The server answers it with [`http_response`].
    Plain(PlainRequest),
}

/// A valid WebSocket opening handshake (RFC 6455 §4.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpgradeRequest {
    /// The request target as sent, e.g. `/chat?room=1` (§4.1 /resource name/).
    pub path: String,
    /// The `Host` header (§4.1 item 4), e.g. `server.example.com:8080`.
    pub host: String,
    /// The `Sec-WebSocket-Key` (§4.1 item 7), trimmed; known to be base64 of 16 bytes.
    pub key: String,
    /// The `Origin` header that browsers send (§4.1 item 8, §10.2). Non-browser
    /// clients may omit it. A server that serves browsers should check it to stop
    /// other sites' pages from connecting with the user's cookies.
    pub origin: Option<String>,
    /// Every subprotocol offered in `Sec-WebSocket-Protocol` (§4.1 item 10), across
    /// repeated headers, trimmed, in the client's order of preference.
    pub protocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` values (§4.1 item 11), one per header line.
    /// Kept for logging only: this server negotiates no extension, so it never
    /// answers with the header, which means "no extension in use" (§9.1).
    pub extensions: Vec<String>,
    /// Every header field as sent, in order: the name as written, the value
    /// trimmed (a byte that is not UTF-8 becomes U+FFFD). Cookies, `Authorization`
    /// and the like are here; see [`UpgradeRequest::header`].
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// The value of the first header called `name` (case-insensitive, RFC 9110
    /// §5.1), e.g. `request.header("authorization")`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path of the request target, without the query: `/chat` for
    /// `/chat?room=1`.
    pub fn resource_path(&self) -> &str {
        split_target(&self.path).0
    }

    /// The query of the request target, without the `?`: `room=1` for
    /// `/chat?room=1`; `None` when there is no `?`.
    pub fn query(&self) -> Option<&str> {
        split_target(&self.path).1
    }
}

/// An ordinary HTTP request (any method, HTTP/1.0 or 1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlainRequest {
    /// The method, e.g. `GET` or `HEAD`.
    pub method: String,
    /// The request target as sent, e.g. `/healthz`.
    pub path: String,
    /// Every header field as sent (see [`UpgradeRequest::headers`]).
    pub headers: Vec<(String, String)>,
}

impl PlainRequest {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path of the request target, without the query.
    pub fn resource_path(&self) -> &str {
        split_target(&self.path).0
    }

    /// The query of the request target, without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        split_target(&self.path).1
    }
}

/// The first header called `name`, case-insensitively.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `/path?query` into `/path` and `query` (RFC 3986 §3.4: the query starts at the
/// first `?`).
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The request's header fields as owned name/value pairs.
fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Why a request head was rejected. Each variant maps to an HTTP status
/// ([`HandshakeError::status`]) and a one-line explanation
/// ([`HandshakeError::reason`]); [`reject`] turns it into a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not valid HTTP/1.x syntax (400).
    Malformed,
    /// More than 64 header fields (431, RFC 6585 §5).
    TooManyHeaders,
    /// The head does not fit in the configured limit (431, RFC 6585 §5).
    HeadTooLarge,
    /// The upgrade request's method is not `GET` (405; §4.1 item 2).
    MethodNotAllowed,
    /// The upgrade request is not HTTP/1.1 (505; §4.1 item 2).
    HttpVersionNotSupported,
    /// The upgrade request has a body (`Content-Length` other than 0, or
    /// `Transfer-Encoding`) (400). The bytes after the head are frames, so a body
    /// would be misread as frames.
    UnexpectedBody,
    /// No `Host` header, or an empty one (400; §4.2.1 item 2).
    MissingHost,
    /// More than one `Host` header (400; RFC 7230 §5.4).
    DuplicateHost,
    /// `Upgrade` is missing or lacks the `websocket` token (400; §4.2.1 item 3).
    NotAnUpgrade,
    /// `Connection` is missing or lacks the `Upgrade` token (400; §4.2.1 item 4).
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version` header (400; §4.2.1 item 6).
    MissingVersion,
    /// `Sec-WebSocket-Version` is not exactly `13` (426; §4.4).
    VersionNotSupported,
    /// No `Sec-WebSocket-Key` header (400; §4.2.1 item 5).
    MissingKey,
    /// More than one `Sec-WebSocket-Key` header (400; §11.3.1).
    DuplicateKey,
    /// `Sec-WebSocket-Key` is not base64 of exactly 16 bytes (400; §4.2.1 item 5).
    InvalidKey,
    /// More than one `Origin` header (400; RFC 6454 §7.3): a server that checks the
    /// origin cannot tell which one to believe.
    DuplicateOrigin,
    /// `Sec-WebSocket-Protocol` is not a comma-separated list of tokens (400; §4.1
    /// item 10).
    InvalidProtocol,
    /// The path, `Host`, `Origin` or `Sec-WebSocket-Extensions` is not visible ASCII
    /// (400).
    InvalidHeaderValue,
}

impl HandshakeError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooManyHeaders | HandshakeError::HeadTooLarge => 431,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::HttpVersionNotSupported => 505,
            HandshakeError::VersionNotSupported => 426,
            HandshakeError::Malformed
            | HandshakeError::UnexpectedBody
            | HandshakeError::MissingHost
            | HandshakeError::DuplicateHost
            | HandshakeError::NotAnUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::MissingVersion
            | HandshakeError::MissingKey
            | HandshakeError::DuplicateKey
            | HandshakeError::InvalidKey
            | HandshakeError::DuplicateOrigin
            | HandshakeError::InvalidProtocol
            | HandshakeError::InvalidHeaderValue => 400,
        }
    }

    /// A short sentence for the response body and the log.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::TooManyHeaders => "too many header fields",
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::MethodNotAllowed => "WebSocket handshake must use GET",
            HandshakeError::HttpVersionNotSupported => "WebSocket handshake requires HTTP/1.1",
            HandshakeError::UnexpectedBody => "WebSocket handshake must not have a body",
            HandshakeError::MissingHost => "Host header is required",
            HandshakeError::DuplicateHost => "Host header must appear once",
            HandshakeError::NotAnUpgrade => "Upgrade header must contain websocket",
            HandshakeError::MissingConnectionUpgrade => "Connection header must contain Upgrade",
            HandshakeError::MissingVersion => "Sec-WebSocket-Version header is required",
            HandshakeError::VersionNotSupported => "only Sec-WebSocket-Version 13 is supported",
            HandshakeError::MissingKey => "Sec-WebSocket-Key header is required",
            HandshakeError::DuplicateKey => "Sec-WebSocket-Key header must appear once",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::DuplicateOrigin => "Origin header must appear at most once",
            HandshakeError::InvalidProtocol => {
                "Sec-WebSocket-Protocol must be a comma-separated list of tokens"
            }
            HandshakeError::InvalidHeaderValue => "path and header values must be visible ASCII",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HandshakeError {}

/// Parses a request head that may still be arriving in pieces.
///
/// Call it with everything received so far; on [`Parsed::Partial`] append the next
/// read to the same buffer and call again. Only the first `max_head_size` bytes are
/// ever examined, so a flood costs at most that much parsing per call:
///
/// * incomplete and `buf.len() >= max_head_size` → [`HandshakeError::HeadTooLarge`]
///   (the head would need more than `max_head_size` bytes);
/// * incomplete and shorter → [`Parsed::Partial`];
/// * complete → the head is at most `max_head_size` bytes, and bytes after it are not
///   counted (they are the first frames).
///
/// A request with any of `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version` is a
/// WebSocket upgrade attempt and must pass every check of RFC 6455 §4.2.1 (or fails
/// with the matching [`HandshakeError`]); any other request is [`Request::Plain`].
pub fn parse_request(buf: &[u8], max_head_size: usize) -> Result<Parsed, HandshakeError> {
    // Looking past the limit is pointless: a head that ends there is too large anyway.
    let window = buf.get(..max_head_size).unwrap_or(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head_size => {
            return Err(HandshakeError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    // Cannot happen because of the window above; kept so the limit holds on its own.
    if head_len > max_head_size {
        return Err(HandshakeError::HeadTooLarge);
    }
    // httparse returns Complete only once method, path and version are all known.
    let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HandshakeError::Malformed);
    };
    let headers: &[httparse::Header<'_>] = req.headers;

    // Any one of these headers means the client wants WebSocket: from here on a
    // mistake is an error, not a reason to fall back to plain HTTP.
    let is_upgrade_attempt = ["Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version"]
        .iter()
        .any(|name| values(headers, name).next().is_some());
    let request = if is_upgrade_attempt {
        Request::Upgrade(validate_upgrade(method, path, minor_version, headers)?)
    } else {
        Request::Plain(PlainRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: owned_headers(headers),
        })
    };
    Ok(Parsed::Complete { request, head_len })
}

/// Applies RFC 6455 §4.2.1 to a complete head that attempts an upgrade.
fn validate_upgrade(
    method: &str,
    path: &str,
    minor_version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<UpgradeRequest, HandshakeError> {
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request". The method is case-sensitive
    // (RFC 7230 §3.1.1), so `get` is not GET.
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    // httparse only accepts HTTP/1.0 and HTTP/1.1; the minor version is 0 or 1.
    if minor_version != 1 {
        return Err(HandshakeError::HttpVersionNotSupported);
    }
    // httparse lets UTF-8 through in the path; a URI has none (non-ASCII must be
    // percent-encoded, RFC 3986 §2.1), and the server may echo the path in a log.
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HandshakeError::InvalidHeaderValue);
    }
    // Whatever follows the head is read as frames, so a body would be misread as one.
    let has_body = values(headers, "Transfer-Encoding").next().is_some()
        || values(headers, "Content-Length").any(|v| trim_ows(v) != b"0");
    if has_body {
        return Err(HandshakeError::UnexpectedBody);
    }

    // §4.2.1 item 2: a Host header. RFC 7230 §5.4 rejects repeated Host headers.
    let host = match single(headers, "Host") {
        Single::Missing => return Err(HandshakeError::MissingHost),
        Single::Repeated => return Err(HandshakeError::DuplicateHost),
        Single::One([]) => return Err(HandshakeError::MissingHost),
        Single::One(value) if !value.iter().all(u8::is_ascii_graphic) => {
            return Err(HandshakeError::InvalidHeaderValue)
        }
        Single::One(value) => ascii_string(value)?,
    };

    // §4.2.1 items 3 and 4: `Upgrade: websocket` and `Connection: Upgrade`, each
    // possibly one token among others (`Connection: keep-alive, Upgrade` is what
    // Firefox sends), compared case-insensitively (RFC 7230 §6.1, §6.7).
    if !has_token(headers, "Upgrade", b"websocket") {
        return Err(HandshakeError::NotAnUpgrade);
    }
    if !has_token(headers, "Connection", b"upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }

    // §4.2.1 item 6: version 13, the only one RFC 6455 defines. Checked before the key
    // so that a client speaking another draft, whose key may look different, still
    // gets the 426 that tells it which version to use (§4.4).
    match single(headers, "Sec-WebSocket-Version") {
        Single::Missing => return Err(HandshakeError::MissingVersion),
        Single::One(b"13") => {}
        Single::One(_) | Single::Repeated => return Err(HandshakeError::VersionNotSupported),
    }

    // §4.2.1 item 5: the key is base64 of 16 random bytes. It must appear once
    // (§11.3.1), otherwise we would not know which one to hash.
    let key = match single(headers, "Sec-WebSocket-Key") {
        Single::Missing => return Err(HandshakeError::MissingKey),
        Single::Repeated => return Err(HandshakeError::DuplicateKey),
        Single::One(value) if is_valid_key(value) => ascii_string(value)?,
        Single::One(_) => return Err(HandshakeError::InvalidKey),
    };

    // §4.1 item 8 (and RFC 6454 §7): the page's origin, sent by browsers.
    let origin = match single(headers, "Origin") {
        Single::Missing => None,
        Single::Repeated => return Err(HandshakeError::DuplicateOrigin),
        Single::One(value) => Some(visible_string(value)?),
    };

    // §4.1 item 10: subprotocols are tokens, as a comma list that may span lines.
    let mut protocols = Vec::new();
    for element in list_elements(headers, "Sec-WebSocket-Protocol") {
        if !element.iter().copied().all(is_tchar) {
            return Err(HandshakeError::InvalidProtocol);
        }
        protocols.push(ascii_string(element)?);
    }

    // §4.1 item 11: recorded verbatim; we never accept one (see the field's doc).
    let extensions = values(headers, "Sec-WebSocket-Extensions")
        .map(visible_string)
        .collect::<Result<Vec<_>, _>>()?;

    Ok(UpgradeRequest {
        path: path.to_owned(),
        host,
        key,
        origin,
        protocols,
        extensions,
        headers: owned_headers(headers),
    })
}

/// The values of every header called `name` (field names are case-insensitive,
/// RFC 7230 §3.2), in order. httparse has already trimmed surrounding whitespace.
fn values<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The non-empty, trimmed elements of a comma-separated header list. Repeated headers
/// are one list joined by commas (RFC 7230 §3.2.2), and empty elements are allowed
/// and ignored (RFC 7230 §7).
fn list_elements<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    values(headers, name)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether the comma list `name` contains `token`, ignoring ASCII case.
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &[u8]) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token))
}

/// A header that must not repeat: absent, present once (trimmed value), or repeated.
enum Single<'b> {
    Missing,
    One(&'b [u8]),
    Repeated,
}

/// Looks up a header that must appear at most once.
fn single<'b>(headers: &[httparse::Header<'b>], name: &str) -> Single<'b> {
    let mut found = values(headers, name);
    match (found.next(), found.next()) {
        (None, _) => Single::Missing,
        (Some(value), None) => Single::One(trim_ows(value)),
        (Some(_), Some(_)) => Single::Repeated,
    }
}

/// Strips optional whitespace (SP and HTAB, RFC 7230 §3.2.3) from both ends.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `tchar` from RFC 7230 §3.2.6: the characters allowed in a token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a key is the base64 (standard alphabet, with padding) of exactly 16 bytes.
/// 16 bytes always encode to 24 characters ending in `==`, which we check first so
/// that the decoder's buffer can live on the stack.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 24];
    key.len() == 24 && matches!(BASE64.decode_slice(key, &mut decoded), Ok(16))
}

/// A header value that may contain spaces but nothing outside visible ASCII.
fn visible_string(value: &[u8]) -> Result<String, HandshakeError> {
    if value
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        ascii_string(value)
    } else {
        Err(HandshakeError::InvalidHeaderValue)
    }
}

/// Converts bytes the caller has already checked to be ASCII; never fails then, but
/// reports an error rather than panicking if that check is ever lost.
fn ascii_string(value: &[u8]) -> Result<String, HandshakeError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| HandshakeError::InvalidHeaderValue)
}

/// Builds the `101 Switching Protocols` response that completes the handshake
/// (RFC 6455 §4.2.2 item 5). After writing it, the connection speaks frames.
///
/// `protocol` is the subprotocol the application chose, and it MUST be one of
/// `request.protocols` (§4.2.2, /subprotocol/): a client fails the connection if the server
/// picks one it did not offer (§4.1). The server passes a value taken from
/// `request.protocols` (or `None`); as a safeguard, a value that is not in that list
/// is left out of the response rather than sent, which also means no caller-supplied
/// bytes can ever reach the header (offered protocols are validated tokens).
///
/// `extra_headers` (from the application) follow; one whose name is not a token or
/// whose value holds control characters is skipped, as in [`http_response`].
///
/// No `Sec-WebSocket-Extensions` is sent: this server negotiates no extension (§9.1).
pub fn switching_protocols(
    request: &UpgradeRequest,
    protocol: Option<&str>,
    extra_headers: &[(String, String)],
) -> Vec<u8> {
    let accept = accept_key(&request.key);
    let chosen = protocol.and_then(|p| request.protocols.iter().find(|offered| *offered == p));
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = chosen {
        push_header(&mut out, "Sec-WebSocket-Protocol", protocol);
    }
    push_valid_headers(
        &mut out,
        extra_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// Builds a complete HTTP/1.1 response that closes the connection afterwards: status
/// line with the standard reason phrase, `Content-Type`, `Content-Length`,
/// `Connection: close`, the `extra_headers` in order, a blank line, then `body`.
///
/// Used for the server's own pages (demo page, `/healthz`, 404, 503 with
/// `Retry-After`) and, through [`reject`], for failed handshakes. `status` must be a
/// three-digit code (anything else is sent as 500). Do not pass `Content-Type`,
/// `Content-Length` or `Connection` in `extra_headers`: they are always written. A
/// header whose name is not a token or whose value contains control characters
/// (notably CR/LF, which would let it forge headers) is skipped, and an unusable
/// `content_type` becomes `application/octet-stream`.
pub fn http_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    build_response(status, "close", extra_headers, content_type, body)
}

/// Builds the response for a rejected request: its status, a text/plain body with
/// [`HandshakeError::reason`], and the headers the status calls for: `Allow: GET` for
/// 405 (RFC 7231 §6.5.5) and `Sec-WebSocket-Version: 13` for 426, which tells the
/// client the version to retry with (RFC 6455 §4.4).
pub fn reject(error: &HandshakeError) -> Vec<u8> {
    let mut body = Vec::with_capacity(error.reason().len() + 1);
    body.extend_from_slice(error.reason().as_bytes());
    body.push(b'\n');
    let content_type = "text/plain; charset=utf-8";
    match error.status() {
        405 => http_response(405, &[("Allow", "GET")], content_type, &body),
        // A 426 must name the protocol to upgrade to (RFC 7231 §6.5.15), and whoever
        // sends `Upgrade` must list it in `Connection` (RFC 7230 §6.7).
        426 => build_response(
            426,
            "Upgrade, close",
            &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            content_type,
            &body,
        ),
        status => http_response(status, &[], content_type, &body),
    }
}

/// [`http_response`] with a chosen `Connection` value.
fn build_response(
    status: u16,
    connection: &str,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let content_type = if is_field_value(content_type) {
        content_type
    } else {
        "application/octet-stream"
    };
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header(&mut out, "Content-Type", content_type);
    push_header(&mut out, "Content-Length", &body.len().to_string());
    push_header(&mut out, "Connection", connection);
    push_valid_headers(&mut out, extra_headers.iter().copied());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Appends each `name: value` whose name is a token and whose value is safe to write
/// (so no caller can forge a header with CR/LF); skips the others.
fn push_valid_headers<'h>(out: &mut Vec<u8>, headers: impl Iterator<Item = (&'h str, &'h str)>) {
    for (name, value) in headers {
        if !name.is_empty() && name.bytes().all(is_tchar) && is_field_value(value) {
            push_header(out, name, value);
        }
    }
}

/// Appends `name: value\r\n`.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A header value safe to write: visible ASCII, spaces and tabs only.
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

/// The standard reason phrase for a status (RFC 7231 §6, RFC 6585). Clients ignore it,
/// so an unknown status gets an empty one, which HTTP allows (RFC 7230 §3.1.2).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The client handshake from RFC 6455 §1.2.
    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    const LIMIT: usize = 8192;

    fn parse(request: &str) -> Result<Parsed, HandshakeError> {
        parse_request(request.as_bytes(), LIMIT)
    }

    /// The RFC request with the header `name` replaced by `replacement` lines (none
    /// removes it).
    fn with_header(name: &str, replacement: &[&str]) -> String {
        let mut out = String::new();
        for line in RFC_REQUEST.split_inclusive("\r\n") {
            if line.starts_with(&format!("{name}:")) {
                for new in replacement {
                    out.push_str(new);
                    out.push_str("\r\n");
                }
            } else {
                out.push_str(line);
            }
        }
        out
    }

    fn upgrade(request: &str) -> UpgradeRequest {
        match parse(request) {
            Ok(Parsed::Complete {
                request: Request::Upgrade(upgrade),
                ..
            }) => upgrade,
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    fn error(request: &str) -> HandshakeError {
        match parse(request) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_request_parses_with_every_field() {
        let parsed = parse(RFC_REQUEST);
        let expected = Parsed::Complete {
            request: Request::Upgrade(UpgradeRequest {
                path: "/chat".into(),
                host: "server.example.com".into(),
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
                origin: Some("http://example.com".into()),
                protocols: vec!["chat".into(), "superchat".into()],
                extensions: vec![],
                headers: [
                    ("Host", "server.example.com"),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Origin", "http://example.com"),
                    ("Sec-WebSocket-Protocol", "chat, superchat"),
                    ("Sec-WebSocket-Version", "13"),
                ]
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .to_vec(),
            }),
            head_len: RFC_REQUEST.len(),
        };
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn every_split_is_partial_until_complete() {
        let bytes = RFC_REQUEST.as_bytes();
        for len in 1..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..len], LIMIT),
                Ok(Parsed::Partial),
                "prefix {len}"
            );
        }
        assert_eq!(parse_request(bytes, LIMIT), parse(RFC_REQUEST));
    }

    #[test]
    fn bytes_after_head_are_not_counted() {
        let mut bytes = RFC_REQUEST.as_bytes().to_vec();
        // A masked text frame "Hi" right behind the head, in the same packet.
        bytes.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2]);
        match parse_request(&bytes, LIMIT) {
            Ok(Parsed::Complete { head_len, .. }) => {
                assert_eq!(head_len, RFC_REQUEST.len());
                assert_eq!(bytes.get(head_len), Some(&0x81));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extensions_and_repeated_protocols_are_collected() {
        let request = with_header(
            "Sec-WebSocket-Protocol",
            &[
                "Sec-WebSocket-Protocol: chat ,, superchat",
                "Sec-WebSocket-Protocol:  v2.json",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Sec-WebSocket-Extensions: x-foo",
            ],
        );
        let upgrade = upgrade(&request);
        assert_eq!(upgrade.protocols, ["chat", "superchat", "v2.json"]);
        assert_eq!(
            upgrade.extensions,
            ["permessage-deflate; client_max_window_bits", "x-foo"]
        );
    }

    #[test]
    fn origin_and_protocol_are_optional() {
        let request = with_header("Origin", &[]);
        let request = request.replace("Sec-WebSocket-Protocol: chat, superchat\r\n", "");
        let upgrade = upgrade(&request);
        assert_eq!(upgrade.origin, None);
        assert!(upgrade.protocols.is_empty());
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let request = RFC_REQUEST
            .replace("Sec-WebSocket-Key", "sec-websocket-key")
            .replace("Host:", "HOST:")
            .replace("Sec-WebSocket-Version", "SEC-WEBSOCKET-VERSION");
        assert_eq!(upgrade(&request).key, "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn connection_token_in_a_list_is_accepted() {
        let request = with_header("Connection", &["Connection: keep-alive, Upgrade"]);
        upgrade(&request);
        let request = with_header(
            "Connection",
            &["Connection: keep-alive", "Connection: upgrade"],
        );
        upgrade(&request);
    }

    #[test]
    fn upgrade_token_is_case_insensitive_and_may_be_listed() {
        upgrade(&with_header("Upgrade", &["Upgrade: WebSocket"]));
        upgrade(&with_header("Upgrade", &["Upgrade: foo, WEBSOCKET"]));
    }

    #[test]
    fn connection_without_upgrade_is_rejected() {
        let request = with_header("Connection", &["Connection: keep-alive"]);
        assert_eq!(error(&request), HandshakeError::MissingConnectionUpgrade);
        assert_eq!(error(&request).status(), 400);
        let request = with_header("Connection", &[]);
        assert_eq!(error(&request), HandshakeError::MissingConnectionUpgrade);
        // A token that merely contains "upgrade" is a different token.
        let request = with_header("Connection", &["Connection: upgraded"]);
        assert_eq!(error(&request), HandshakeError::MissingConnectionUpgrade);
    }

    #[test]
    fn upgrade_without_websocket_is_rejected() {
        let request = with_header("Upgrade", &["Upgrade: h2c"]);
        assert_eq!(error(&request), HandshakeError::NotAnUpgrade);
        // Still an upgrade attempt because of the Sec-WebSocket-* headers.
        let request = with_header("Upgrade", &[]);
        assert_eq!(error(&request), HandshakeError::NotAnUpgrade);
        assert_eq!(error(&request).status(), 400);
    }

    #[test]
    fn version_8_gets_426_naming_13() {
        let request = with_header("Sec-WebSocket-Version", &["Sec-WebSocket-Version: 8"]);
        let err = error(&request);
        assert_eq!(err, HandshakeError::VersionNotSupported);
        assert_eq!(err.status(), 426);
        let response = reject(&err);
        assert!(response.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(contains(&response, "\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(contains(&response, "\r\nUpgrade: websocket\r\n"));
        assert!(contains(&response, "\r\nConnection: Upgrade, close\r\n"));
    }

    #[test]
    fn repeated_version_is_not_supported() {
        let request = with_header(
            "Sec-WebSocket-Version",
            &["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"],
        );
        assert_eq!(error(&request), HandshakeError::VersionNotSupported);
    }

    #[test]
    fn missing_version_is_400() {
        let request = with_header("Sec-WebSocket-Version", &[]);
        assert_eq!(error(&request), HandshakeError::MissingVersion);
        assert_eq!(error(&request).status(), 400);
    }

    #[test]
    fn post_upgrade_is_405_with_allow() {
        let request = RFC_REQUEST.replacen("GET", "POST", 1);
        let err = error(&request);
        assert_eq!(err, HandshakeError::MethodNotAllowed);
        assert_eq!(err.status(), 405);
        let response = reject(&err);
        assert!(response.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(contains(&response, "\r\nAllow: GET\r\n"));
    }

    #[test]
    fn http_1_0_upgrade_is_505() {
        let request = RFC_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1);
        let err = error(&request);
        assert_eq!(err, HandshakeError::HttpVersionNotSupported);
        assert_eq!(err.status(), 505);
    }

    #[test]
    fn missing_or_repeated_host_is_400() {
        assert_eq!(
            error(&with_header("Host", &[])),
            HandshakeError::MissingHost
        );
        assert_eq!(
            error(&with_header("Host", &["Host:"])),
            HandshakeError::MissingHost
        );
        let twice = with_header("Host", &["Host: a.example", "Host: b.example"]);
        assert_eq!(error(&twice), HandshakeError::DuplicateHost);
        let spaced = with_header("Host", &["Host: a b"]);
        assert_eq!(error(&spaced), HandshakeError::InvalidHeaderValue);
        for err in [HandshakeError::MissingHost, HandshakeError::DuplicateHost] {
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn key_problems_are_400() {
        let key = |value: &str| {
            let line = format!("Sec-WebSocket-Key: {value}");
            error(&with_header("Sec-WebSocket-Key", &[&line]))
        };
        // 15 bytes encode to 20 characters.
        assert_eq!(key("AAAAAAAAAAAAAAAAAAAA"), HandshakeError::InvalidKey);
        // 17 bytes encode to 24 characters with one `=`.
        assert_eq!(key("AAAAAAAAAAAAAAAAAAAAAAA="), HandshakeError::InvalidKey);
        assert_eq!(key("not base64 at all!!!!!=="), HandshakeError::InvalidKey);
        // Right length, unpadded: 18 bytes.
        assert_eq!(key("AAAAAAAAAAAAAAAAAAAAAAAA"), HandshakeError::InvalidKey);
        // URL-safe alphabet is not the standard one.
        assert_eq!(key("dGhlIHNhbXBsZSBub25jZQ_-"), HandshakeError::InvalidKey);
        // Non-canonical: the last character carries bits the 16 bytes do not have.
        assert_eq!(key("dGhlIHNhbXBsZSBub25jZR=="), HandshakeError::InvalidKey);
        assert_eq!(HandshakeError::InvalidKey.status(), 400);

        let missing = with_header("Sec-WebSocket-Key", &[]);
        assert_eq!(error(&missing), HandshakeError::MissingKey);
        let twice = with_header(
            "Sec-WebSocket-Key",
            &[
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
        );
        assert_eq!(error(&twice), HandshakeError::DuplicateKey);
        for err in [HandshakeError::MissingKey, HandshakeError::DuplicateKey] {
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn key_with_whitespace_is_trimmed() {
        let request = with_header(
            "Sec-WebSocket-Key",
            &["Sec-WebSocket-Key: \t dGhlIHNhbXBsZSBub25jZQ==  "],
        );
        assert_eq!(upgrade(&request).key, "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn repeated_origin_is_400() {
        let request = with_header(
            "Origin",
            &["Origin: http://a.example", "Origin: http://b.example"],
        );
        assert_eq!(error(&request), HandshakeError::DuplicateOrigin);
        assert_eq!(HandshakeError::DuplicateOrigin.status(), 400);
    }

    #[test]
    fn protocol_must_be_tokens() {
        let request = with_header(
            "Sec-WebSocket-Protocol",
            &["Sec-WebSocket-Protocol: chat, super chat"],
        );
        assert_eq!(error(&request), HandshakeError::InvalidProtocol);
        let request = with_header(
            "Sec-WebSocket-Protocol",
            &["Sec-WebSocket-Protocol: \"chat\""],
        );
        assert_eq!(error(&request), HandshakeError::InvalidProtocol);
        assert_eq!(HandshakeError::InvalidProtocol.status(), 400);
    }

    #[test]
    fn non_ascii_values_are_400() {
        let mut request = with_header("Origin", &["Origin: http://\u{e9}.example"]);
        assert_eq!(error(&request), HandshakeError::InvalidHeaderValue);
        // Raw obs-text byte that is not UTF-8.
        request = with_header("Origin", &["Origin: http://~.example"]);
        let mut bytes = request.into_bytes();
        let at = bytes.iter().position(|&b| b == b'~').unwrap_or(0);
        bytes[at] = 0xFF;
        assert_eq!(
            parse_request(&bytes, LIMIT),
            Err(HandshakeError::InvalidHeaderValue)
        );
        assert_eq!(HandshakeError::InvalidHeaderValue.status(), 400);
    }

    #[test]
    fn upgrade_with_body_is_400() {
        let request = with_header("Origin", &["Content-Length: 5"]);
        assert_eq!(error(&request), HandshakeError::UnexpectedBody);
        let request = with_header("Origin", &["Transfer-Encoding: chunked"]);
        assert_eq!(error(&request), HandshakeError::UnexpectedBody);
        assert_eq!(HandshakeError::UnexpectedBody.status(), 400);
        // An explicit empty body is harmless.
        upgrade(&with_header("Origin", &["Content-Length: 0"]));
    }

    #[test]
    fn malformed_is_400() {
        assert_eq!(
            error("GET /chat HTTP/1.1\r\nHost\r\n\r\n"),
            HandshakeError::Malformed
        );
        assert_eq!(
            error("\u{1}GET / HTTP/1.1\r\n\r\n"),
            HandshakeError::Malformed
        );
        assert_eq!(error("GET / HTTP/2.0\r\n\r\n"), HandshakeError::Malformed);
        assert_eq!(HandshakeError::Malformed.status(), 400);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut request = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            request.push_str(&format!("X-H{i}: v\r\n"));
        }
        request.push_str("\r\n");
        let err = error(&request);
        assert_eq!(err, HandshakeError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn head_over_limit_is_431_partial_or_complete() {
        let bytes = RFC_REQUEST.as_bytes();
        let len = bytes.len();
        // Exactly at the limit is fine.
        assert!(matches!(
            parse_request(bytes, len),
            Ok(Parsed::Complete { .. })
        ));
        // Complete, but one byte over.
        assert_eq!(
            parse_request(bytes, len - 1),
            Err(HandshakeError::HeadTooLarge)
        );
        // Incomplete and already as long as the limit: it can only end beyond it.
        assert_eq!(
            parse_request(&bytes[..100], 100),
            Err(HandshakeError::HeadTooLarge)
        );
        // Incomplete below the limit: keep reading.
        assert_eq!(parse_request(&bytes[..100], 101), Ok(Parsed::Partial));
        // Frame bytes after a head that fits do not count against the limit.
        let mut with_frame = bytes.to_vec();
        with_frame.extend_from_slice(&[0x81; 64]);
        assert!(matches!(
            parse_request(&with_frame, len),
            Ok(Parsed::Complete { head_len, .. }) if head_len == len
        ));
        assert_eq!(HandshakeError::HeadTooLarge.status(), 431);
        assert!(reject(&HandshakeError::HeadTooLarge)
            .starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        assert_eq!(
            parse(request),
            Ok(Parsed::Complete {
                request: Request::Plain(PlainRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: vec![("Host".into(), "localhost".into())],
                }),
                head_len: request.len(),
            })
        );
        // Plain HTTP needs neither GET, 1.1 nor Host.
        let request = "HEAD /healthz HTTP/1.0\r\n\r\n";
        assert!(matches!(
            parse(request),
            Ok(Parsed::Complete { request: Request::Plain(PlainRequest { ref method, ref path, .. }), .. })
                if method == "HEAD" && path == "/healthz"
        ));
        // `Connection: Upgrade` alone does not make an upgrade attempt.
        let request = "GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n";
        assert!(matches!(
            parse(request),
            Ok(Parsed::Complete {
                request: Request::Plain(_),
                ..
            })
        ));
    }

    #[test]
    fn a_lone_websocket_header_makes_an_upgrade_attempt() {
        let request = "GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(error(request), HandshakeError::NotAnUpgrade);
    }

    #[test]
    fn switching_protocols_has_accept_and_chosen_protocol() {
        let request = upgrade(RFC_REQUEST);
        let response = switching_protocols(&request, Some("chat"), &[]);
        assert_eq!(
            response,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\
              \r\n"
        );
        let plain = switching_protocols(&request, None, &[]);
        assert!(contains(
            &plain,
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        ));
        assert!(!contains(&plain, "Sec-WebSocket-Protocol"));
        assert!(plain.ends_with(b"\r\n\r\n"));
        assert!(!contains(&plain, "Sec-WebSocket-Extensions"));
    }

    #[test]
    fn switching_protocols_drops_unoffered_protocol() {
        let request = upgrade(RFC_REQUEST);
        let response = switching_protocols(&request, Some("mqtt\r\nX-Evil: 1"), &[]);
        assert!(!contains(&response, "Sec-WebSocket-Protocol"));
        assert!(!contains(&response, "X-Evil"));
    }

    #[test]
    fn switching_protocols_adds_valid_extra_headers_only() {
        let request = upgrade(RFC_REQUEST);
        let extra = [
            ("Set-Cookie", "session=1"),
            ("X-Evil", "a\r\nInjected: 1"),
            ("Bad Name", "x"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()));
        let response = switching_protocols(&request, None, &extra);
        assert!(contains(&response, "\r\nSet-Cookie: session=1\r\n"));
        assert!(!contains(&response, "Injected"));
        assert!(!contains(&response, "Bad Name"));
        assert!(response.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn the_target_splits_into_path_and_query_and_headers_are_found_by_any_case() {
        let request = upgrade(
            "GET /chat?token=abc&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t0k3n\r\n\r\n",
        );
        assert_eq!(request.resource_path(), "/chat");
        assert_eq!(request.query(), Some("token=abc&x=1"));
        assert_eq!(request.header("authorization"), Some("Bearer t0k3n"));
        assert_eq!(request.header("cookie"), None);
        assert_eq!(upgrade(RFC_REQUEST).query(), None);
    }

    #[test]
    fn http_response_layout() {
        let response = http_response(503, &[("Retry-After", "5")], "text/plain", b"busy\n");
        assert_eq!(
            response,
            b"HTTP/1.1 503 Service Unavailable\r\n\
              Content-Type: text/plain\r\n\
              Content-Length: 5\r\n\
              Connection: close\r\n\
              Retry-After: 5\r\n\
              \r\n\
              busy\n"
        );
        for (status, phrase) in [
            (200, "OK"),
            (400, "Bad Request"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (426, "Upgrade Required"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
        ] {
            let line = format!("HTTP/1.1 {status} {phrase}\r\n");
            assert!(http_response(status, &[], "text/html", b"").starts_with(line.as_bytes()));
        }
    }

    #[test]
    fn http_response_refuses_header_injection() {
        let response = http_response(
            200,
            &[
                ("X-Ok", "1"),
                ("X-Bad", "1\r\nSet-Cookie: a=b"),
                ("Bad Name", "1"),
            ],
            "text/plain\r\nX-Evil: 1",
            b"",
        );
        assert!(contains(&response, "\r\nX-Ok: 1\r\n"));
        assert!(!contains(&response, "Set-Cookie"));
        assert!(!contains(&response, "Bad Name"));
        assert!(!contains(&response, "X-Evil"));
        assert!(contains(
            &response,
            "Content-Type: application/octet-stream\r\n"
        ));
        assert!(http_response(7, &[], "text/plain", b"").starts_with(b"HTTP/1.1 500 "));
    }

    #[test]
    fn reject_body_is_the_reason() {
        let err = HandshakeError::InvalidKey;
        let response = reject(&err);
        let body = b"Sec-WebSocket-Key must be base64 of 16 bytes\n";
        assert!(response.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(response.ends_with(body));
        assert!(contains(
            &response,
            &format!("Content-Length: {}\r\n", body.len())
        ));
        assert!(contains(
            &response,
            "Content-Type: text/plain; charset=utf-8\r\n"
        ));
        assert_eq!(
            err.to_string(),
            "Sec-WebSocket-Key must be base64 of 16 bytes"
        );
    }

    /// A valid request with varying path, host, key bytes and offered protocols.
    fn valid_request() -> impl Strategy<Value = (String, UpgradeRequest)> {
        (
            "/[a-z0-9/?=&]{0,20}",
            "[a-z]{1,10}(\\.[a-z]{1,5})?(:[0-9]{1,5})?",
            any::<[u8; 16]>(),
            proptest::collection::vec("[a-zA-Z0-9.+-]{1,8}", 0..4),
            any::<bool>(),
        )
            .prop_map(|(path, host, nonce, protocols, firefox)| {
                let key = BASE64.encode(nonce);
                let connection = if firefox {
                    "keep-alive, Upgrade"
                } else {
                    "Upgrade"
                };
                let mut head = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                     Connection: {connection}\r\nSec-WebSocket-Key: {key}\r\n\
                     Sec-WebSocket-Version: 13\r\n"
                );
                if !protocols.is_empty() {
                    head.push_str(&format!(
                        "Sec-WebSocket-Protocol: {}\r\n",
                        protocols.join(", ")
                    ));
                }
                head.push_str("\r\n");
                let expected = UpgradeRequest {
                    path,
                    host,
                    key,
                    origin: None,
                    protocols,
                    extensions: vec![],
                    headers: head
                        .lines()
                        .skip(1)
                        .filter_map(|line| line.split_once(": "))
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                };
                (head, expected)
            })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            limit in 0usize..700,
        ) {
            let _ = parse_request(&bytes, limit);
        }

        #[test]
        fn mutated_requests_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
            limit in 0usize..400,
        ) {
            let mut bytes = RFC_REQUEST.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ => if let Some(b) = bytes.get_mut(i) { *b = byte },
                }
            }
            if let Ok(Parsed::Complete { head_len, .. }) = parse_request(&bytes, limit) {
                prop_assert!(head_len <= bytes.len() && head_len <= limit);
            }
        }

        #[test]
        fn valid_request_parses_identically_at_any_split(
            (head, expected) in valid_request(),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
            split in any::<prop::sample::Index>(),
        ) {
            let mut bytes = head.clone().into_bytes();
            bytes.extend_from_slice(&tail);
            let whole = Parsed::Complete {
                request: Request::Upgrade(expected),
                head_len: head.len(),
            };
            prop_assert_eq!(parse_request(&bytes, LIMIT), Ok(whole.clone()));
            let cut = split.index(bytes.len() + 1);
            let prefix = bytes.get(..cut).unwrap_or(&bytes);
            let parsed = parse_request(prefix, LIMIT);
            if cut < head.len() {
                prop_assert_eq!(parsed, Ok(Parsed::Partial));
            } else {
                prop_assert_eq!(parsed, Ok(whole));
            }
        }
    }
}
