//! How results are printed: `-o table|wide|json|yaml`, human-readable
//! numbers, colour. The table layout and byte sizes are shared with the
//! other binaries: [`ste_core::table`], [`ste_core::units`].

pub mod human;
pub mod term;

use serde::Serialize;

use crate::error::{CliError, CliResult};

pub use ste_core::table::{Cell, Style, Table};
pub use term::Term;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The default table.
    Table,
    /// The table with more columns.
    Wide,
    /// One JSON document with the same facts as the table.
    Json,
    /// The JSON document as YAML.
    Yaml,
}

/// The accepted `-o` values (also for shell completion).
pub const FORMATS: [&str; 4] = ["table", "wide", "json", "yaml"];

impl Format {
    /// Parses `-o`; the error is kubectl's.
    pub fn parse(value: Option<&str>) -> CliResult<Format> {
        match value.unwrap_or("table") {
            "" | "table" => Ok(Format::Table),
            "wide" => Ok(Format::Wide),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            other => Err(CliError::msg(format!(
                "unable to match a printer suitable for the output format {other:?}, allowed \
                 formats are: {}",
                FORMATS.join(",")
            ))),
        }
    }

    /// True for json and yaml.
    pub fn is_document(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }
}

/// `value` as JSON (pretty, 4-space like kubectl) or YAML, ending in a
/// newline.
pub fn document<T: Serialize>(format: Format, value: &T) -> CliResult<String> {
    let text = match format {
        Format::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| CliError::msg(format!("cannot render YAML: {e}")))?,
        _ => {
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            value
                .serialize(&mut ser)
                .map_err(|e| CliError::msg(format!("cannot render JSON: {e}")))?;
            String::from_utf8(buf).map_err(|e| CliError::msg(e.to_string()))?
        }
    };
    Ok(if text.ends_with('\n') {
        text
    } else {
        format!("{text}\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(Format::parse(None).unwrap(), Format::Table);
        assert_eq!(Format::parse(Some("wide")).unwrap(), Format::Wide);
        assert_eq!(
            Format::parse(Some("xml")).unwrap_err().to_string(),
            "error: unable to match a printer suitable for the output format \"xml\", allowed \
             formats are: table,wide,json,yaml"
        );
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        node_name: String,
        keys: u64,
        tags: Vec<String>,
        missing: Option<u64>,
    }

    #[test]
    fn documents() {
        let doc = Doc {
            node_name: "node-a".into(),
            keys: 3,
            tags: vec!["x".into()],
            missing: None,
        };
        let json = document(Format::Json, &doc).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["nodeName"], "node-a");
        assert!(json.contains("\n    \"keys\": 3"));
        let yaml = document(Format::Yaml, &doc).unwrap();
        assert!(yaml.contains("nodeName: node-a\n"), "{yaml}");
        assert!(yaml.contains("keys: 3\n"), "{yaml}");
        assert!(yaml.ends_with('\n'));
    }
}
