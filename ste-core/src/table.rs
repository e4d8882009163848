//! kubectl's table layout: upper-case headers, left-aligned columns, cells
//! padded to the widest plus 3 spaces (minimum 6), the last column
//! unpadded (kubectl's `tabwriter.NewWriter(out, 6, 4, 3, ' ', 0)`).
//!
//! Every table the workspace prints (`kubectl ste`, `ste-agent-status`) is
//! laid out here, so scripts that cut columns see one layout. Colour is
//! optional per cell and never changes the layout: widths are measured on
//! the text, not on escape codes.

/// A colour for a table cell (or any other text written to a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Failures.
    Red,
    /// All good.
    Green,
    /// Warnings.
    Yellow,
    /// Emphasis.
    Bold,
}

impl Style {
    /// `text` wrapped in this style's ANSI escape codes (SGR, reset after).
    pub fn paint(self, text: &str) -> String {
        let code = match self {
            Style::Red => "31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Bold => "1",
        };
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    }
}

const MIN_WIDTH: usize = 6;
const PADDING: usize = 3;

/// One cell: its text, and how to colour it when colour is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The text; widths are measured on it, never on escape codes.
    pub text: String,
    /// Colour, if any.
    pub style: Option<Style>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, style: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_owned())
    }
}

impl Cell {
    /// A coloured cell.
    pub fn styled(text: impl Into<String>, style: Option<Style>) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }
}

/// A table under construction.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self, headers: bool, color: bool) -> String {
        let header_row: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell::from(h.as_str()))
            .collect();
        let lines: Vec<&Vec<Cell>> = headers
            .then_some(&header_row)
            .into_iter()
            .chain(self.rows.iter())
            .collect();
        let columns = self.headers.len();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                let widest = lines
                    .iter()
                    .map(|row| row.get(i).map_or(0, |c| c.text.chars().count()))
                    .max()
                    .unwrap_or(0);
                (widest + PADDING).max(MIN_WIDTH)
            })
            .collect();
        let mut out = String::new();
        for row in lines {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let text = match (color, cell.style) {
                    (true, Some(style)) => style.paint(&cell.text),
                    _ => cell.text.clone(),
                };
                line.push_str(&text);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.text.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
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

    #[test]
    fn layout_matches_kubectl() {
        let mut t = Table::new(["NAME", "READY", "AGE"]);
        t.row(vec!["web-0".into(), "1/1".into(), "5m".into()]);
        t.row(vec![
            "a".into(),
            Cell::styled("0/1", Some(Style::Red)),
            "10d".into(),
        ]);
        assert_eq!(
            t.render(true, false),
            "NAME    READY   AGE\nweb-0   1/1     5m\na       0/1     10d\n"
        );
        assert_eq!(
            t.render(false, false),
            "web-0   1/1   5m\na       0/1   10d\n"
        );
        // Colour does not change the layout.
        let coloured = t.render(true, true);
        assert!(coloured.contains("\u{1b}[31m0/1\u{1b}[0m     10d"));
    }

    #[test]
    fn narrow_columns_get_the_minimum_width_and_lines_no_trailing_blanks() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(vec!["1".into(), "".into(), "".into()]);
        // Each column is at least 6 wide; the empty last cells leave no
        // trailing spaces.
        assert_eq!(t.render(true, false), "A     B     C\n1\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(["NAME", "X"]);
        t.row(vec!["größe-ü".into(), "1".into()]);
        assert_eq!(t.render(true, false), "NAME      X\ngröße-ü   1\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(["NAME", "READY"]);
        assert!(t.is_empty());
        assert_eq!(t.render(true, false), "NAME   READY\n");
        assert_eq!(t.render(false, false), "");
    }
}
