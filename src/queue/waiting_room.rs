//! The answers of the login queue: the waiting room (503, `Retry-After`, the configured page or
//! the built-in one of [`crate::pages`], or `{"queued":true,"position":N,"eta_seconds":S,
//! "tenant":"..."}`, and the `rempart_ticket` cookie), the turn of the page's poll (200), and the
//! full queue (503 at once).

use std::sync::Arc;

use http::header::{HeaderValue, SET_COOKIE};

use crate::answer::{Answer, Page, Reason};
use crate::pages::{self, Builtin, Values};

/// Seconds a waiting-room client is asked to wait before coming back.
pub fn retry_after(eta_seconds: u64, ticket_ttl_seconds: u64) -> u64 {
    // Come back well within the ticket's life, and not later than 30 s to keep the page live.
    let cap = (ticket_ttl_seconds / 2).clamp(1, 30);
    eta_seconds.clamp(1, cap)
}

/// The operator's page with its placeholders filled.
pub fn render_page(
    template: &str,
    position: usize,
    eta_seconds: u64,
    tenant: &str,
    retry: u64,
) -> String {
    let values = Values {
        position: Some(position),
        eta_seconds: Some(eta_seconds),
        tenant: Some(tenant),
        retry_after: retry,
    };
    pages::fill(template, |name| values.get(name))
}

/// What the waiting room says to one request.
pub struct Place<'a> {
    pub position: usize,
    pub eta_seconds: u64,
    pub tenant: &'a str,
    pub retry_after: u64,
    /// `Set-Cookie` value of the ticket.
    pub ticket_cookie: String,
}

pub fn waiting_room(place: &Place<'_>, page: Option<&Arc<str>>) -> Answer {
    let mut answer = Answer::new(Reason::WaitingRoom);
    answer.retry_after = Some(place.retry_after);
    answer.json = Some(serde_json::json!({
        "queued": true,
        "position": place.position,
        "eta_seconds": place.eta_seconds,
        "tenant": place.tenant,
    }));
    answer.page = Some(match page {
        Some(template) => Page::Configured(Arc::from(render_page(
            template,
            place.position,
            place.eta_seconds,
            place.tenant,
            place.retry_after,
        ))),
        None => Page::Builtin(Builtin::WaitingRoom {
            position: place.position,
            eta_seconds: place.eta_seconds,
            tenant: place.tenant.to_string(),
            retry_after: place.retry_after,
        }),
    });
    if let Ok(value) = HeaderValue::from_str(&place.ticket_cookie) {
        answer.headers.push((SET_COOKIE, value));
    }
    answer
}

/// The answer to the waiting room's poll (`X-Rempart-Poll`) when the line lets it through:
/// 200 `{"queued":false,"tenant":"..."}` and the ticket, renewed. The page then loads its
/// address again, and that request takes the ticket's place in line.
pub fn turn(tenant: &str, ticket_cookie: Option<String>) -> Answer {
    let mut answer = Answer::new(Reason::QueueTurn);
    answer.json = Some(serde_json::json!({
        "queued": false,
        "tenant": tenant,
    }));
    if let Some(value) = ticket_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        answer.headers.push((SET_COOKIE, value));
    }
    answer
}

pub fn queue_full(queue: &str) -> Answer {
    let mut answer = Answer::new(Reason::QueueFull).detail(queue);
    answer.retry_after = Some(5);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_placeholders_and_escaping() {
        let page = render_page(
            "<p>{{position}} {{eta_seconds}} {{retry_after}} {{tenant}}</p>",
            12,
            30,
            "<b>&",
            10,
        );
        assert_eq!(page, "<p>12 30 10 &lt;b&gt;&amp;</p>");
    }

    #[test]
    fn json_body() {
        let answer = waiting_room(
            &Place {
                position: 3,
                eta_seconds: 7,
                tenant: "0123456A",
                retry_after: 7,
                ticket_cookie: "rempart_ticket=x.y; Path=/".into(),
            },
            None,
        );
        let (head, body) = answer.render(Some(b"application/json"), None).unwrap();
        assert_eq!(head.status.as_u16(), 503);
        assert_eq!(head.headers["retry-after"], "7");
        assert_eq!(head.headers["set-cookie"], "rempart_ticket=x.y; Path=/");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"queued":true,"position":3,"eta_seconds":7,"tenant":"0123456A"})
        );
    }

    #[test]
    fn the_builtin_page_without_a_configured_one() {
        let place = Place {
            position: 3,
            eta_seconds: 7,
            tenant: "0123456A",
            retry_after: 7,
            ticket_cookie: "rempart_ticket=x.y; Path=/".into(),
        };
        let answer = waiting_room(&place, None);
        let (head, body) = answer.render(Some(b"text/html"), None).unwrap();
        assert_eq!(head.headers["set-cookie"], "rempart_ticket=x.y; Path=/");
        assert!(head.headers.contains_key("content-security-policy"));
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.contains(r#"<strong data-field="position">3</strong>"#));
        assert!(html.contains("0123456A"));

        let page: Arc<str> = Arc::from("<p>{{position}} {{tenant}}</p>");
        let answer = waiting_room(&place, Some(&page));
        let (head, body) = answer.render(Some(b"text/html"), None).unwrap();
        assert!(!head.headers.contains_key("content-security-policy"));
        assert_eq!(&body[..], b"<p>3 0123456A</p>");
    }

    #[test]
    fn turn_body_and_renewed_ticket() {
        let answer = turn("0123456A", Some("rempart_ticket=x.y; Path=/".into()));
        let (head, body) = answer.render(Some(b"application/json"), None).unwrap();
        assert_eq!(head.status.as_u16(), 200);
        assert_eq!(head.headers["set-cookie"], "rempart_ticket=x.y; Path=/");
        assert!(!head.headers.contains_key("retry-after"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"queued":false,"tenant":"0123456A"}));
    }

    #[test]
    fn retry_after_bounds() {
        assert_eq!(retry_after(0, 120), 1);
        assert_eq!(retry_after(500, 120), 30);
        assert_eq!(retry_after(500, 10), 5);
        assert_eq!(retry_after(4, 120), 4);
    }
}
