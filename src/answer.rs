//! Answers Rempart writes itself: the one place that turns a refusal or a failure into a
//! status, headers and a short body (JSON, text, a configured page, or a built-in page of
//! [`crate::pages`] in the client's language).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::pages::{self, Builtin, Lang};

/// Why Rempart answered instead of the upstream. The string is the `reason` of SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Malformed,
    /// A path that the origin could read as another one (`%2F`, `..;`, ...): strict mode.
    PathRejected,
    Denied,
    Banned,
    NoRoute,
    HeaderTimeout,
    BodyTooSlow,
    BodyTooLarge,
    HeadersTooLarge,
    RateLimited,
    WaitingRoom,
    /// The waiting room's poll (`X-Rempart-Poll`) was let through by the line: 200, nothing
    /// sent upstream; the page loads its address again.
    QueueTurn,
    QueueFull,
    Maintenance,
    NoUpstream,
    UpstreamError,
    UpstreamTimeout,
    /// The server went down while the request was in flight (cut after `on_down.cut_after`).
    UpstreamDown,
}

impl Reason {
    /// How many reasons there are (`UpstreamDown` is the last): `reason as usize` is below.
    pub const COUNT: usize = Reason::UpstreamDown as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed_request",
            Reason::PathRejected => "path_rejected",
            Reason::Denied => "denied",
            Reason::Banned => "banned",
            Reason::NoRoute => "no_route",
            Reason::HeaderTimeout => "header_timeout",
            Reason::BodyTooSlow => "body_too_slow",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::RateLimited => "rate_limited",
            Reason::WaitingRoom => "waiting_room",
            Reason::QueueTurn => "queue_turn",
            Reason::QueueFull => "queue_full",
            Reason::Maintenance => "maintenance",
            Reason::NoUpstream => "no_upstream",
            Reason::UpstreamError => "upstream_error",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamDown => "upstream_down",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::Malformed | Reason::PathRejected => 400,
            Reason::Denied | Reason::Banned => 403,
            Reason::QueueTurn => 200,
            Reason::NoRoute => 404,
            Reason::HeaderTimeout | Reason::BodyTooSlow => 408,
            Reason::BodyTooLarge => 413,
            Reason::HeadersTooLarge => 431,
            Reason::RateLimited => 429,
            Reason::WaitingRoom | Reason::QueueFull | Reason::Maintenance | Reason::NoUpstream => {
                503
            }
            Reason::UpstreamError | Reason::UpstreamDown => 502,
            Reason::UpstreamTimeout => 504,
        }
    }

    /// A sentence for people, in French then English.
    fn message(self) -> &'static str {
        match self {
            Reason::Malformed => "Requête invalide. / Malformed request.",
            Reason::PathRejected => {
                "Chemin de requête ambigu, refusé. / Ambiguous request path, refused."
            }
            Reason::Denied => "Accès refusé. / Access denied.",
            Reason::Banned => {
                "Trop de requêtes : accès suspendu pour un moment. / Too many requests: access suspended for a while."
            }
            Reason::NoRoute => "Aucun service à cette adresse. / No service at this address.",
            Reason::HeaderTimeout => {
                "La requête est arrivée trop lentement. / The request head arrived too slowly."
            }
            Reason::BodyTooSlow => {
                "Le corps de la requête arrive trop lentement. / The request body is too slow."
            }
            Reason::BodyTooLarge => "Requête trop volumineuse. / Request body too large.",
            Reason::HeadersTooLarge => {
                "En-têtes trop volumineux. / Request headers too large."
            }
            Reason::RateLimited => {
                "Trop de requêtes, réessayez dans un instant. / Too many requests, try again shortly."
            }
            Reason::WaitingRoom => {
                "Vous êtes dans la file d'attente. / You are in the waiting line."
            }
            Reason::QueueTurn => "C'est votre tour. / It is your turn.",
            Reason::QueueFull => {
                "La file d'attente est pleine, réessayez dans un instant. / The waiting line is full, try again shortly."
            }
            Reason::Maintenance => {
                "Service en maintenance, revenez dans quelques minutes. / Service under maintenance, come back in a few minutes."
            }
            Reason::NoUpstream => {
                "Service momentanément indisponible. / Service temporarily unavailable."
            }
            Reason::UpstreamError => {
                "Le service n'a pas pu répondre. / The service could not answer."
            }
            Reason::UpstreamTimeout => {
                "Le service a mis trop de temps à répondre. / The service took too long to answer."
            }
            Reason::UpstreamDown => {
                "Le serveur est tombé pendant la requête, qui n'a pas été rejouée. / The server went down during the request, which was not sent again."
            }
        }
    }
}

/// The HTML an answer shows to clients that do not prefer JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The operator's page (`pages.*`), placeholders already filled; served as it is.
    Configured(Arc<str>),
    /// A page compiled into Rempart, written in the client's `Accept-Language` and served with
    /// [`pages::CSP`].
    Builtin(Builtin),
}

/// An answer's body: bytes made already, the operator's page (copied only where it goes), or
/// its plain text, written where it goes.
enum Content<'a> {
    Bytes(Bytes),
    Page(&'a [u8]),
    Text,
}

/// A header name as pingora writes it on HTTP/1 (`pingora_http`'s case for names given as
/// `HeaderName`): title case for the few it knows, as is for the others.
fn wire_name(name: &HeaderName) -> &str {
    use http::header;
    match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

/// A complete answer: reason, optional details for the body, extra headers, optional page.
pub struct Answer {
    pub reason: Reason,
    /// Names what refused, e.g. the limit; goes into the JSON body and the text.
    pub detail: Option<String>,
    pub retry_after: Option<u64>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// HTML served instead of the text body to clients that do not prefer JSON.
    pub page: Option<Page>,
    /// JSON body served instead of the generic one to clients that prefer JSON.
    pub json: Option<serde_json::Value>,
    /// Close the connection after this answer.
    pub close: bool,
}

impl Answer {
    pub fn new(reason: Reason) -> Self {
        Answer {
            reason,
            detail: None,
            retry_after: None,
            headers: Vec::new(),
            page: None,
            json: None,
            close: matches!(
                reason,
                Reason::Malformed | Reason::HeaderTimeout | Reason::BodyTooSlow
            ),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What the answer says to a client whose `Accept` header is `accept` and whose
    /// `Accept-Language` is `accept_language`: its content type, its body, and the language of
    /// a built-in page.
    fn content(
        &self,
        accept: Option<&[u8]>,
        accept_language: Option<&[u8]>,
    ) -> (&'static str, Content<'_>, Option<Lang>) {
        let json = accept.is_some_and(prefers_json);
        if let (true, Some(value)) = (json, &self.json) {
            let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
            return ("application/json", Content::Bytes(body), None);
        }
        if json {
            let mut value = serde_json::json!({
                "status": self.reason.status(),
                "reason": self.reason.as_str(),
                "message": self.reason.message(),
            });
            if let (Some(detail), Some(map)) = (&self.detail, value.as_object_mut()) {
                map.insert("detail".into(), serde_json::Value::from(detail.as_str()));
            }
            let body = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
            return ("application/json", Content::Bytes(body), None);
        }
        match &self.page {
            Some(Page::Configured(html)) => (
                "text/html; charset=utf-8",
                Content::Page(html.as_bytes()),
                None,
            ),
            Some(Page::Builtin(builtin)) => {
                let lang = Lang::from_accept_language(accept_language);
                let body = Bytes::from(builtin.render(lang));
                ("text/html; charset=utf-8", Content::Bytes(body), Some(lang))
            }
            None => ("text/plain; charset=utf-8", Content::Text, None),
        }
    }

    /// The plain text body's length: `status reason[: detail]`, then the message.
    fn text_len(&self) -> usize {
        let detail = self.detail.as_ref().map_or(0, |d| 2 + d.len());
        3 + 1 + self.reason.as_str().len() + detail + 1 + self.reason.message().len() + 1
    }

    /// The plain text body, into `out`.
    fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(self.reason.status()).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.reason.as_str().as_bytes());
        if let Some(detail) = &self.detail {
            out.extend_from_slice(b": ");
            out.extend_from_slice(detail.as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(self.reason.message().as_bytes());
        out.push(b'\n');
    }

    /// Build the response head and body for a client whose `Accept` header is `accept` and
    /// whose `Accept-Language` is `accept_language`.
    pub fn render(
        &self,
        accept: Option<&[u8]>,
        accept_language: Option<&[u8]>,
    ) -> Result<(ResponseHeader, Bytes)> {
        let status = self.reason.status();
        let (content_type, content, builtin_lang) = self.content(accept, accept_language);
        let body = match content {
            Content::Bytes(body) => body,
            Content::Page(html) => Bytes::copy_from_slice(html),
            Content::Text => {
                let mut text = Vec::with_capacity(self.text_len());
                self.write_text(&mut text);
                Bytes::from(text)
            }
        };
        let mut head = ResponseHeader::build(status, Some(6))?;
        head.insert_header(http::header::CONTENT_TYPE, content_type)?;
        head.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        head.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        if let Some(seconds) = self.retry_after {
            head.insert_header(http::header::RETRY_AFTER, seconds)?;
        }
        if let Some(lang) = builtin_lang {
            head.insert_header(http::header::CONTENT_SECURITY_POLICY, pages::CSP)?;
            head.insert_header(http::header::CONTENT_LANGUAGE, lang.code())?;
        }
        if self.close {
            head.insert_header(http::header::CONNECTION, "close")?;
        }
        for (name, value) in &self.headers {
            head.append_header(name.clone(), value.clone())?;
        }
        Ok((head, body))
    }

    /// The answer as it goes on the wire to an HTTP/1.1 client, into `out`: the head
    /// [`Answer::render`] builds (the same headers, in the same order and case, as pingora
    /// writes them), then `Date` and, unless the answer closes, `Connection: keep-alive`; the
    /// body unless `head_only` (a HEAD). Written straight, without a header map: refusals
    /// under a flood take this path. Returns the status.
    pub fn write_h1(
        &self,
        head_only: bool,
        accept: Option<&[u8]>,
        accept_language: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> u16 {
        let status = self.reason.status();
        let (content_type, content, builtin_lang) = self.content(accept, accept_language);
        let body_len = match &content {
            Content::Bytes(body) => body.len(),
            Content::Page(html) => html.len(),
            Content::Text => self.text_len(),
        };
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(number.format(status).as_bytes());
        out.push(b' ');
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason());
        out.extend_from_slice(canonical.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(number.format(body_len).as_bytes());
        out.extend_from_slice(b"\r\nCache-Control: no-store\r\n");
        if let Some(seconds) = self.retry_after {
            out.extend_from_slice(b"retry-after: ");
            out.extend_from_slice(number.format(seconds).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(lang) = builtin_lang {
            out.extend_from_slice(b"content-security-policy: ");
            out.extend_from_slice(pages::CSP.as_bytes());
            out.extend_from_slice(b"\r\ncontent-language: ");
            out.extend_from_slice(lang.code().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let mut closes = false;
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
            closes = true;
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(wire_name(name).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
            closes |= *name == http::header::CONNECTION;
        }
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
        out.extend_from_slice(b"\r\n");
        if !closes {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            match content {
                Content::Bytes(body) => out.extend_from_slice(&body),
                Content::Page(html) => out.extend_from_slice(html),
                Content::Text => self.write_text(out),
            }
        }
        status
    }

    /// Write the answer to the client. The caller counts and logs it.
    pub async fn send(&self, session: &mut Session) -> Result<()> {
        let headers = &session.req_header().headers;
        let accept = headers.get(http::header::ACCEPT).map(|v| v.as_bytes());
        let accept_language = headers
            .get(http::header::ACCEPT_LANGUAGE)
            .map(|v| v.as_bytes());
        let (head, body) = self.render(accept, accept_language)?;
        if self.close {
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(head), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

/// Whether an `Accept` header prefers `application/json` to HTML and text: JSON is listed with
/// a non-zero weight at least as high as any `text/html` or `text/plain`.
pub fn prefers_json(accept: &[u8]) -> bool {
    let Ok(accept) = std::str::from_utf8(accept) else {
        return false;
    };
    let mut json_q: Option<f32> = None;
    let mut text_q: f32 = 0.0;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" | "application/problem+json" => {
                json_q = Some(json_q.map_or(q, |old: f32| old.max(q)))
            }
            "text/html" | "text/plain" | "application/xhtml+xml" => text_q = text_q.max(q),
            _ => {}
        }
    }
    matches!(json_q, Some(q) if q > 0.0 && q >= text_q)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pingora writes for the head `render` builds, with the `Date` and keep-alive lines
    /// the edge adds: what `write_h1` must write.
    fn through_pingora(
        answer: &Answer,
        head_only: bool,
        accept: Option<&[u8]>,
        lang: Option<&[u8]>,
    ) -> Vec<u8> {
        let (head, body) = answer.render(accept, lang).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"HTTP/1.1 ");
        bytes.extend_from_slice(head.status.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(head.status.canonical_reason().unwrap_or("").as_bytes());
        bytes.extend_from_slice(b"\r\n");
        head.header_to_h1_wire(&mut bytes);
        bytes.extend_from_slice(b"Date: ");
        bytes.extend_from_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
        bytes.extend_from_slice(b"\r\n");
        if !head.headers.contains_key(http::header::CONNECTION) {
            bytes.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        if !head_only {
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    #[test]
    fn the_wire_form_is_what_pingora_writes_for_the_rendered_head() {
        let mut answers = Vec::new();
        for reason in [
            Reason::Malformed,
            Reason::Banned,
            Reason::RateLimited,
            Reason::QueueFull,
            Reason::Maintenance,
            Reason::UpstreamDown,
        ] {
            answers.push(Answer::new(reason));
        }
        let mut limited = Answer::new(Reason::RateLimited).detail("flood");
        limited.retry_after = Some(7);
        limited.headers.push((
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_static("\"flood\";q=1;w=1"),
        ));
        limited
            .headers
            .push((http::header::SET_COOKIE, HeaderValue::from_static("a=b")));
        answers.push(limited);
        let mut closing = Answer::new(Reason::Banned).detail("ban");
        closing.close = true;
        answers.push(closing);
        let mut own_connection = Answer::new(Reason::Denied);
        own_connection
            .headers
            .push((http::header::CONNECTION, HeaderValue::from_static("close")));
        answers.push(own_connection);
        let mut json = Answer::new(Reason::WaitingRoom);
        json.json = Some(serde_json::json!({"position": 3}));
        json.page = Some(Page::Configured(Arc::from("<p>attendez</p>")));
        answers.push(json);
        let mut page = Answer::new(Reason::Maintenance);
        page.page = Some(Page::Builtin(Builtin::Maintenance { retry_after: 30 }));
        answers.push(page);

        let accepts: [Option<&[u8]>; 3] = [None, Some(b"application/json"), Some(b"text/html")];
        let langs: [Option<&[u8]>; 3] = [None, Some(b"fr"), Some(b"en-GB,en;q=0.9")];
        for answer in &answers {
            for accept in accepts {
                for lang in langs {
                    for head_only in [false, true] {
                        let mut written = Vec::new();
                        let status = answer.write_h1(head_only, accept, lang, &mut written);
                        let expected = through_pingora(answer, head_only, accept, lang);
                        // The cached date may turn over between the two: its line is
                        // compared for its place, not its time.
                        let undated = |bytes: &[u8]| {
                            let text = String::from_utf8_lossy(bytes).into_owned();
                            match (text.find("\r\nDate: "), text.find(" GMT\r\n")) {
                                (Some(from), Some(to)) => {
                                    format!("{}\r\nDate: *{}", &text[..from], &text[to + 4..])
                                }
                                _ => text,
                            }
                        };
                        assert_eq!(
                            undated(&written),
                            undated(&expected),
                            "{:?} {:?}, accept {accept:?}, language {lang:?}",
                            answer.reason,
                            answer.detail
                        );
                        assert_eq!(status, answer.reason.status());
                    }
                }
            }
        }
    }

    #[test]
    fn json_preference() {
        assert!(prefers_json(b"application/json"));
        assert!(prefers_json(b"application/json, text/plain;q=0.5"));
        assert!(!prefers_json(
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!prefers_json(b"text/html, application/json;q=0.9"));
        assert!(!prefers_json(b"*/*"));
        assert!(!prefers_json(b"application/json;q=0"));
        assert!(!prefers_json(b"\xff"));
    }

    #[test]
    fn json_body_names_reason_and_detail() {
        let answer = Answer::new(Reason::RateLimited).detail("per_ip");
        let (head, body) = answer.render(Some(b"application/json"), None).unwrap();
        assert_eq!(head.status.as_u16(), 429);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["reason"], "rate_limited");
        assert_eq!(value["detail"], "per_ip");
        assert_eq!(value["status"], 429);
    }

    #[test]
    fn text_body_and_close() {
        let answer = Answer::new(Reason::Malformed);
        let (head, body) = answer.render(None, None).unwrap();
        assert_eq!(head.status.as_u16(), 400);
        assert_eq!(head.headers["connection"], "close");
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("malformed_request"));
    }

    #[test]
    fn builtin_pages_carry_their_csp_and_language_and_configured_ones_do_not() {
        let mut answer = Answer::new(Reason::Maintenance);
        answer.page = Some(Page::Builtin(Builtin::Maintenance { retry_after: 30 }));
        let (head, body) = answer
            .render(Some(b"text/html"), Some(b"en-GB,en;q=0.9"))
            .unwrap();
        assert_eq!(head.status.as_u16(), 503);
        assert_eq!(head.headers["content-security-policy"], pages::CSP);
        assert_eq!(head.headers["content-language"], "en");
        assert!(head.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.contains("<html lang=\"en\">"));

        let (head, body) = answer.render(None, None).unwrap();
        assert_eq!(head.headers["content-language"], "fr");
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("<html lang=\"fr\">"));

        // A client that prefers JSON gets JSON, without the page's policy.
        let (head, body) = answer.render(Some(b"application/json"), None).unwrap();
        assert!(!head.headers.contains_key("content-security-policy"));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["reason"], "maintenance");

        answer.page = Some(Page::Configured(Arc::from("<p>ours</p>")));
        let (head, body) = answer.render(None, Some(b"en")).unwrap();
        assert!(!head.headers.contains_key("content-security-policy"));
        assert!(!head.headers.contains_key("content-language"));
        assert_eq!(&body[..], b"<p>ours</p>");
    }
}
