//! Aligned text tables and ANSI colours for `rempart ctl`. Colours never count in a column's
//! width, and every text is made safe to print first: names in `/status` (tenants, above all)
//! come from clients, and must not drive the operator's terminal.

/// A colour or weight for a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Bold,
    Dim,
    Green,
    Yellow,
    Red,
}

impl Paint {
    fn code(self) -> Option<&'static str> {
        match self {
            Paint::Plain => None,
            Paint::Bold => Some("1"),
            Paint::Dim => Some("2"),
            Paint::Green => Some("32"),
            Paint::Yellow => Some("33"),
            Paint::Red => Some("31"),
        }
    }
}

/// Whether to colour (stdout is a terminal and `NO_COLOR` is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    /// `text` wrapped in the paint's ANSI codes, or as it is without colour.
    pub fn paint(&self, text: &str, paint: Paint) -> String {
        match paint.code() {
            Some(code) if self.colour && !text.is_empty() => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }
}

/// Text safe to print: control characters (escape sequences, carriage returns, newlines)
/// written as escapes.
pub fn sanitize(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters of a safe text, the end replaced by `…` when clipped.
pub fn clip(text: &str, max: usize) -> String {
    let safe = sanitize(text);
    if safe.chars().count() <= max {
        return safe;
    }
    let mut out: String = safe.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One cell: its text (made safe) and its paint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    text: String,
    paint: Paint,
}

impl Cell {
    pub fn new(text: impl AsRef<str>) -> Cell {
        Cell::painted(text, Paint::Plain)
    }

    pub fn painted(text: impl AsRef<str>, paint: Paint) -> Cell {
        Cell {
            text: sanitize(text.as_ref()),
            paint,
        }
    }

    fn width(&self) -> usize {
        self.text.chars().count()
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::new(text)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::new(text)
    }
}

/// A table: a header line, then rows; columns two spaces apart, numbers aligned right.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns these columns (by index) to the right.
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<Cell>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), Cell::new(""));
        self.rows.push(cells);
    }

    /// The table, each line starting with `indent` and ending with a newline; no trailing
    /// spaces.
    pub fn render(&self, style: &Style, indent: &str) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.width());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell::painted(h, Paint::Dim))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(cell.width()));
                let text = style.paint(&cell.text, cell.paint);
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(&text);
                } else {
                    line.push_str(&text);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { colour: false };
    const COLOUR: Style = Style { colour: true };

    fn sample() -> Table {
        let mut t = Table::new(&["NAME", "STATE", "IN FLIGHT"]).right(&[2]);
        t.row(vec![
            "dc-a".into(),
            Cell::painted("draining", Paint::Yellow),
            "3".into(),
        ]);
        t.row(vec![
            "dc-b-longer".into(),
            Cell::painted("up", Paint::Green),
            "120".into(),
        ]);
        t.row(vec!["short".into()]);
        t
    }

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        assert_eq!(
            sample().render(&PLAIN, "  "),
            "  NAME         STATE     IN FLIGHT\n\
             \x20 dc-a         draining          3\n\
             \x20 dc-b-longer  up              120\n\
             \x20 short\n"
        );
    }

    #[test]
    fn colours_do_not_count_in_widths() {
        let coloured = sample().render(&COLOUR, "");
        assert!(coloured.contains("\x1b[33mdraining\x1b[0m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[2mNAME\x1b[0m"), "{coloured:?}");
        let strip = |s: &str| {
            let mut out = String::new();
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        };
        assert_eq!(strip(&coloured), sample().render(&PLAIN, ""));
        assert_eq!(PLAIN.paint("x", Paint::Red), "x");
        assert_eq!(COLOUR.paint("", Paint::Red), "");
        assert_eq!(COLOUR.paint("x", Paint::Plain), "x");
    }

    #[test]
    fn client_controlled_text_cannot_drive_the_terminal() {
        assert_eq!(sanitize("0750001A"), "0750001A");
        assert_eq!(sanitize("evil\x1b[2J\r\n"), "evil\\u{1b}[2J\\r\\n");
        let mut t = Table::new(&["TENANT", "WAITING"]);
        t.row(vec!["\x1b]0;pwned\x07".into(), "1".into()]);
        let out = t.render(&PLAIN, "");
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abcd", 4), "abcd");
        assert_eq!(clip("é€ü", 2), "é…");
    }

    #[test]
    fn unicode_widths_count_characters() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["école".into(), "x".into()]);
        t.row(vec!["e".into(), "y".into()]);
        assert_eq!(t.render(&PLAIN, ""), "A      B\nécole  x\ne      y\n");
    }
}
