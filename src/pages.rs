//! The pages Rempart shows people: the built-in waiting room and maintenance page (compiled in
//! from `src/pages/`, in French or English by `Accept-Language`), used when `pages.waiting_room`
//! or `pages.maintenance` is not configured, and the placeholder filling they share with the
//! operator's pages.
//!
//! A built-in page is a shell (`waiting-room.html`, `maintenance.html`: head, style, script)
//! holding two sections, one per language (`*.fr.html`, `*.en.html`): the client's language
//! first, the other one below. Both are templates with the operator's placeholders
//! (`{{position}}`, `{{eta_seconds}}`, `{{retry_after}}`, `{{tenant}}`) and a few of their own
//! that only Rust fills (`{{lang}}`, `{{title}}`, `{{eta}}`, ...).
//!
//! The waiting room's script polls the same address with `X-Rempart-Poll` (see
//! [`crate::queue::QueueCore::poll`]), which Rempart answers itself.

use std::borrow::Cow;

use crate::queue::{DEFAULT_TENANT, UNKNOWN_TENANT};

/// The `Content-Security-Policy` of the built-in pages: inline style and script, requests to
/// the same origin only (the waiting room's polling), nothing from anywhere else.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:";

const STYLE: &str = include_str!("pages/style.css");
const WAITING_ROOM: &str = include_str!("pages/waiting-room.html");
const WAITING_ROOM_FR: &str = include_str!("pages/waiting-room.fr.html");
const WAITING_ROOM_EN: &str = include_str!("pages/waiting-room.en.html");
const MAINTENANCE: &str = include_str!("pages/maintenance.html");
const MAINTENANCE_FR: &str = include_str!("pages/maintenance.fr.html");
const MAINTENANCE_EN: &str = include_str!("pages/maintenance.en.html");

/// The language of a built-in page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    /// The `lang` attribute and the `Content-Language` header.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    fn other(self) -> Lang {
        match self {
            Lang::Fr => Lang::En,
            Lang::En => Lang::Fr,
        }
    }

    /// French unless the client's `Accept-Language` prefers English: English must weigh more
    /// than French (a tie, no header, or neither language named gives French). `*` stands for
    /// a language the header does not name.
    pub fn from_accept_language(header: Option<&[u8]>) -> Lang {
        let Some(text) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return Lang::Fr;
        };
        let (mut fr, mut en, mut any): (Option<f32>, Option<f32>, Option<f32>) = (None, None, None);
        for item in text.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .map_or(1.0, |q| q.clamp(0.0, 1.0));
            let primary = tag.split('-').next().unwrap_or("");
            let slot = if primary.eq_ignore_ascii_case("fr") {
                &mut fr
            } else if primary.eq_ignore_ascii_case("en") {
                &mut en
            } else if tag == "*" {
                &mut any
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        let weight = |named: Option<f32>| named.or(any).unwrap_or(0.0);
        if weight(en) > weight(fr) {
            Lang::En
        } else {
            Lang::Fr
        }
    }
}

/// A built-in page and what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    WaitingRoom {
        position: usize,
        eta_seconds: u64,
        tenant: String,
        retry_after: u64,
    },
    Maintenance {
        retry_after: u64,
    },
}

impl Builtin {
    /// The page in `lang`, the other language below.
    pub fn render(&self, lang: Lang) -> String {
        let values = self.values();
        let (shell, sections, title) = match self {
            Builtin::WaitingRoom { .. } => (
                WAITING_ROOM,
                [WAITING_ROOM_FR, WAITING_ROOM_EN],
                ["File d'attente", "Waiting line"],
            ),
            Builtin::Maintenance { .. } => (
                MAINTENANCE,
                [MAINTENANCE_FR, MAINTENANCE_EN],
                [
                    "Service momentanément indisponible",
                    "Service temporarily unavailable",
                ],
            ),
        };
        let pick = |l: Lang| match l {
            Lang::Fr => 0,
            Lang::En => 1,
        };
        let other = lang.other();
        let main = section(sections[pick(lang)], lang, true, &values);
        let below = section(sections[pick(other)], other, false, &values);
        fill(shell, |name| match name {
            "lang" => Some(Cow::Borrowed(lang.code())),
            "other_lang" => Some(Cow::Borrowed(other.code())),
            "title" => Some(Cow::Borrowed(title[pick(lang)])),
            "site" => Some(Cow::Borrowed(match lang {
                Lang::Fr => "Espace numérique de travail",
                Lang::En => "Digital workspace",
            })),
            "other_link" => Some(Cow::Borrowed(match lang {
                Lang::Fr => "English version below",
                Lang::En => "Version française ci-dessous",
            })),
            "style" => Some(Cow::Borrowed(STYLE)),
            "main" => Some(Cow::Borrowed(main.as_str())),
            "other" => Some(Cow::Borrowed(below.as_str())),
            _ => values.get(name),
        })
    }

    fn values(&self) -> Values<'_> {
        match self {
            Builtin::WaitingRoom {
                position,
                eta_seconds,
                tenant,
                retry_after,
            } => Values {
                position: Some(*position),
                eta_seconds: Some(*eta_seconds),
                tenant: Some(tenant),
                retry_after: *retry_after,
            },
            Builtin::Maintenance { retry_after } => Values {
                position: None,
                eta_seconds: None,
                tenant: None,
                retry_after: *retry_after,
            },
        }
    }
}

/// One language's section of a built-in page: the place is a live region in the first section
/// only (a screen reader reads it once), and only the first one has the page's `h1`.
fn section(template: &str, lang: Lang, first: bool, values: &Values<'_>) -> String {
    let school_named = values
        .tenant
        .is_some_and(|t| t != DEFAULT_TENANT && t != UNKNOWN_TENANT);
    fill(template, |name| match name {
        "h" => Some(Cow::Borrowed(if first { "h1" } else { "h2" })),
        "live" => Some(Cow::Borrowed(if first {
            r#" role="status" aria-live="polite""#
        } else {
            ""
        })),
        "school_hidden" => Some(Cow::Borrowed(if school_named { "" } else { " hidden" })),
        "eta" => values.eta_seconds.map(|s| Cow::Owned(eta_text(lang, s))),
        _ => values.get(name),
    })
}

/// The estimated wait in words: seconds under a minute, else minutes rounded up.
pub fn eta_text(lang: Lang, seconds: u64) -> String {
    let minutes = seconds >= 60;
    let n = if minutes {
        seconds.div_ceil(60)
    } else {
        seconds.max(1)
    };
    let unit = match (minutes, lang) {
        (true, _) => "minute",
        (false, Lang::Fr) => "seconde",
        (false, Lang::En) => "second",
    };
    let about = match lang {
        Lang::Fr => "environ",
        Lang::En => "about",
    };
    let plural = if n > 1 { "s" } else { "" };
    format!("{about} {n}\u{a0}{unit}{plural}")
}

/// The values of the placeholders an operator's page may use too.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    pub position: Option<usize>,
    pub eta_seconds: Option<u64>,
    pub tenant: Option<&'a str>,
    pub retry_after: u64,
}

impl Values<'_> {
    /// The text of `{{name}}`: numbers as they are, the tenant escaped for HTML.
    pub fn get(&self, name: &str) -> Option<Cow<'static, str>> {
        match name {
            "position" => self.position.map(|p| Cow::Owned(p.to_string())),
            "eta_seconds" => self.eta_seconds.map(|s| Cow::Owned(s.to_string())),
            "retry_after" => Some(Cow::Owned(self.retry_after.to_string())),
            "tenant" => self.tenant.map(|t| Cow::Owned(escape(t))),
            _ => None,
        }
    }
}

/// Replace each `{{name}}` of `template` by `value(name)`, in one pass: what a value brings in
/// is never read as a placeholder. Unknown names are left as they are.
pub fn fill<'v>(template: &str, value: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if is_name(&after[..end]) => {
                let name = &after[..end];
                match value(name) {
                    Some(text) => out.push_str(&text),
                    None => {
                        out.push_str("{{");
                        out.push_str(name);
                        out.push_str("}}");
                    }
                }
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Escape text for HTML (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(header: &str) -> Lang {
        Lang::from_accept_language(Some(header.as_bytes()))
    }

    #[test]
    fn language_from_accept_language() {
        assert_eq!(lang("fr-FR,fr;q=0.9,en;q=0.8"), Lang::Fr);
        assert_eq!(lang("en-GB,en;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept_language(None), Lang::Fr);
        assert_eq!(lang("de"), Lang::Fr);
        assert_eq!(lang("de-DE,de;q=0.9,en;q=0.5"), Lang::En);
        assert_eq!(lang("en-US,en;q=0.9,fr;q=0.8"), Lang::En);
        assert_eq!(lang("en,fr"), Lang::Fr, "a tie gives French");
        assert_eq!(lang("fr;q=0, en"), Lang::En);
        assert_eq!(lang("*"), Lang::Fr);
        assert_eq!(lang("en;q=0.4, *;q=0.5"), Lang::Fr, "* weighs for French");
        assert_eq!(lang("EN-gb; Q=0.7"), Lang::En);
        assert_eq!(lang("en;q=abc"), Lang::En, "a bad weight counts as 1");
        assert_eq!(lang(""), Lang::Fr);
        assert_eq!(
            Lang::from_accept_language(Some(b"\xff\xfe")),
            Lang::Fr,
            "not UTF-8"
        );
    }

    #[test]
    fn fill_is_one_pass_and_leaves_unknown_names() {
        let values = Values {
            position: Some(12),
            eta_seconds: Some(30),
            tenant: Some("{{position}}<b>&\"'"),
            retry_after: 10,
        };
        let page = fill(
            "<p>{{position}} {{eta_seconds}} {{retry_after}} {{tenant}} {{nope}} {{ x }} {{</p>",
            |n| values.get(n),
        );
        assert_eq!(
            page,
            "<p>12 30 10 {{position}}&lt;b&gt;&amp;&quot;&#39; {{nope}} {{ x }} {{</p>"
        );
    }

    fn waiting(tenant: &str) -> Builtin {
        Builtin::WaitingRoom {
            position: 42,
            eta_seconds: 95,
            tenant: tenant.into(),
            retry_after: 7,
        }
    }

    #[test]
    fn waiting_room_in_french_then_english() {
        let page = waiting("<0750004D>").render(Lang::Fr);
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"fr\">"));
        assert!(!page.contains("{{"), "every placeholder filled");
        let fr = page.find("Votre place dans la file").unwrap();
        let en = page.find("Your place in line").unwrap();
        assert!(fr < en, "French first");
        assert!(page.contains(r#"<section class="other" id="other" lang="en">"#));
        assert!(page.contains(r#"<strong data-field="position">42</strong>"#));
        assert!(page.contains("environ 2\u{a0}minutes"));
        assert!(page.contains("about 2\u{a0}minutes"));
        assert!(page.contains("Établissement&nbsp;: &lt;0750004D&gt;"));
        assert!(!page.contains("<0750004D>"), "the tenant is escaped");
        assert!(page.contains(r#"<meta http-equiv="refresh" content="7">"#));
        assert!(page.contains(r#"data-retry-after="7""#));
        assert_eq!(page.matches("aria-live=\"polite\"").count(), 1);
        assert_eq!(page.matches("<h1>").count(), 1);
        assert!(page.contains("<h1>Beaucoup de connexions"));
        assert!(page.contains("<h2>Many people"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn waiting_room_in_english_then_french() {
        let page = waiting("0750004D").render(Lang::En);
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<title>Waiting line</title>"));
        assert!(page.contains("<h1>Many people"));
        assert!(page.contains("<h2>Beaucoup de connexions"));
        let en = page.find("Your place in line").unwrap();
        let fr = page.find("Votre place dans la file").unwrap();
        assert!(en < fr, "English first");
        assert!(page.contains(r#"lang="fr">Version française ci-dessous"#));
        assert!(page.contains("<p class=\"small\">School: 0750004D</p>"));
    }

    #[test]
    fn no_school_line_for_the_default_and_unknown_tenants() {
        for tenant in [DEFAULT_TENANT, UNKNOWN_TENANT] {
            let page = waiting(tenant).render(Lang::Fr);
            assert!(page.contains("<p class=\"small\" hidden>Établissement"));
        }
    }

    #[test]
    fn maintenance_in_both_languages() {
        let page = Builtin::Maintenance { retry_after: 30 }.render(Lang::Fr);
        assert!(page.contains("<html lang=\"fr\">"));
        assert!(page.contains(r#"<meta http-equiv="refresh" content="30">"#));
        assert!(page.contains("<h1>Service momentanément indisponible</h1>"));
        assert!(page.contains("toutes les 30&nbsp;secondes"));
        assert!(page.contains("every 30&nbsp;seconds"));
        assert!(!page.contains("{{"));
        assert!(!page.contains("<script"));
        let page = Builtin::Maintenance { retry_after: 30 }.render(Lang::En);
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<h1>Service temporarily unavailable</h1>"));
    }

    #[test]
    fn eta_in_words() {
        assert_eq!(eta_text(Lang::Fr, 0), "environ 1\u{a0}seconde");
        assert_eq!(eta_text(Lang::Fr, 45), "environ 45\u{a0}secondes");
        assert_eq!(eta_text(Lang::En, 1), "about 1\u{a0}second");
        assert_eq!(eta_text(Lang::En, 60), "about 1\u{a0}minute");
        assert_eq!(eta_text(Lang::En, 61), "about 2\u{a0}minutes");
    }
}
