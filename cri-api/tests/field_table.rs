//! `docs/cri-fields.md` against berth's CRI proto: one section per message of the descriptor
//! (`cri_api::FILE_DESCRIPTOR_SET`), in the proto's order, each with exactly one row per field
//! of that message and no other; every row's status starts with one of [`STATUSES`]. A field
//! berth silently ignores although it asks for something is marked `DROPPED`; those rows must
//! be exactly [`KNOWN_DROPPED`], so that the to-do list here can neither grow nor shrink
//! without this file saying so. (When the last one is fixed, `KNOWN_DROPPED` is empty and a new
//! `DROPPED` row fails the test.)

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

const PACKAGE: &str = "runtime.v1";

/// The page, relative to this crate.
const TABLE: &str = "../docs/cri-fields.md";

/// The words a row's status may start with.
const STATUSES: &[&str] = &[
    "served",
    "refused",
    "logged",
    "not filled",
    "ignored",
    "DROPPED",
];

/// The request fields berth silently ignores although they ask for something (`Message.field`),
/// as `docs/cri-fields.md` marks them: the to-do list. Fixing one means changing its row and
/// removing it here.
const KNOWN_DROPPED: &[&str] = &[];

/// Every message of the proto, in order, with its fields in order. Map entries (which protoc
/// makes nested messages) are not messages of the proto text; any other nested message would
/// be `Outer.Inner`.
fn proto_messages() -> Vec<(String, Vec<String>)> {
    let set = FileDescriptorSet::decode(cri_api::FILE_DESCRIPTOR_SET).expect("descriptor decodes");
    let files: Vec<_> = set.file.iter().filter(|f| f.package() == PACKAGE).collect();
    assert_eq!(files.len(), 1, "one file in package {PACKAGE}");
    let mut out = Vec::new();
    for msg in &files[0].message_type {
        collect(msg, "", &mut out);
    }
    out
}

fn collect(msg: &DescriptorProto, outer: &str, out: &mut Vec<(String, Vec<String>)>) {
    if msg.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    let name = if outer.is_empty() {
        msg.name().to_owned()
    } else {
        format!("{outer}.{}", msg.name())
    };
    let fields = msg.field.iter().map(|f| f.name().to_owned()).collect();
    out.push((name.clone(), fields));
    for nested in &msg.nested_type {
        collect(nested, &name, out);
    }
}

/// One table row of the page.
struct Row {
    line: usize,
    field: String,
    status: String,
}

/// One `## Message` section of the page.
struct Section {
    line: usize,
    name: String,
    rows: Vec<Row>,
}

/// The page's `## ` sections and their table rows (header and separator rows left out);
/// `errors` gets what cannot be parsed.
fn parse(text: &str, errors: &mut Vec<String>) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if let Some(name) = l.strip_prefix("## ") {
            sections.push(Section {
                line,
                name: name.trim().to_owned(),
                rows: Vec::new(),
            });
            continue;
        }
        if !l.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = l
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect::<Vec<_>>();
        let separator = cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')));
        if separator || cells == ["field", "berth"] {
            continue;
        }
        let Some(section) = sections.last_mut() else {
            errors.push(format!(
                "{TABLE}:{line}: a table row before any `## Message` section: {l}"
            ));
            continue;
        };
        if cells.len() != 2 {
            errors.push(format!(
                "{TABLE}:{line}: {}: a row must be `| field | berth |`, got {} cells: {l}",
                section.name,
                cells.len()
            ));
            continue;
        }
        section.rows.push(Row {
            line,
            field: cells[0].trim_matches('`').to_owned(),
            status: cells[1].to_owned(),
        });
    }
    sections
}

/// The status word `status` starts with, if it is one of [`STATUSES`] (as a whole word).
fn status_word(status: &str) -> Option<&'static str> {
    STATUSES.iter().copied().find(|w| {
        status
            .strip_prefix(w)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn every_field_of_the_proto_has_one_row_and_every_row_a_field() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cri-fields.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let proto = proto_messages();
    assert!(
        proto.len() > 150 && proto.iter().map(|(_, f)| f.len()).sum::<usize>() > 400,
        "the descriptor is the whole CRI proto"
    );
    let fields_of: BTreeMap<&str, &[String]> = proto
        .iter()
        .map(|(m, f)| (m.as_str(), f.as_slice()))
        .collect();

    let mut errors = Vec::new();
    let sections = parse(&text, &mut errors);

    // Sections: one per message, no other, in the proto's order.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sections {
        if !fields_of.contains_key(s.name.as_str()) {
            errors.push(format!(
                "{TABLE}:{}: section `## {}`: the proto has no message {}",
                s.line, s.name, s.name
            ));
        } else if let Some(first) = seen.insert(&s.name, s.line) {
            errors.push(format!(
                "{TABLE}:{}: message {}: a second section (the first is at line {first})",
                s.line, s.name
            ));
        }
    }
    for (msg, _) in &proto {
        if !seen.contains_key(msg.as_str()) {
            errors.push(format!(
                "{TABLE}: message {msg}: no `## {msg}` section (its fields have no rows)"
            ));
        }
    }
    let doc_order: Vec<&str> = sections
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| fields_of.contains_key(n))
        .collect();
    let proto_order: Vec<&str> = proto
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| seen.contains_key(m))
        .collect();
    if let Some((d, p)) = doc_order
        .iter()
        .zip(&proto_order)
        .find(|(d, p)| d != p)
        .filter(|_| doc_order.len() == proto_order.len())
    {
        errors.push(format!(
            "{TABLE}: sections are not in the proto's order: section {d} where the proto has \
             message {p}"
        ));
    }

    // Rows: exactly one per field of the section's message, with a known status.
    let mut dropped = BTreeSet::new();
    for s in &sections {
        let Some(fields) = fields_of.get(s.name.as_str()) else {
            continue;
        };
        let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &s.rows {
            let name = format!("{}.{}", s.name, r.field);
            if !fields.contains(&r.field) {
                errors.push(format!(
                    "{TABLE}:{}: {name}: message {} has no field {}",
                    r.line, s.name, r.field
                ));
            }
            if let Some(first) = rows.insert(&r.field, r.line) {
                errors.push(format!(
                    "{TABLE}:{}: {name}: a second row (the first is at line {first})",
                    r.line
                ));
            }
            match status_word(&r.status) {
                None => errors.push(format!(
                    "{TABLE}:{}: {name}: status {:?} does not start with one of {STATUSES:?}",
                    r.line, r.status
                )),
                Some("DROPPED") => {
                    println!("DROPPED {name}: {}", r.status);
                    dropped.insert(name);
                }
                Some(_) => {}
            }
        }
        for f in fields.iter() {
            if !rows.contains_key(f.as_str()) {
                errors.push(format!(
                    "{TABLE}: {}.{f}: no row in section `## {}`",
                    s.name, s.name
                ));
            }
        }
    }

    // The DROPPED rows are exactly the known ones.
    let known: BTreeSet<String> = KNOWN_DROPPED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        known.len(),
        KNOWN_DROPPED.len(),
        "KNOWN_DROPPED lists a field twice"
    );
    for name in dropped.difference(&known) {
        errors.push(format!(
            "{name}: marked DROPPED in {TABLE} but not in KNOWN_DROPPED (a new bug: fix it, or \
             list it there)"
        ));
    }
    for name in known.difference(&dropped) {
        errors.push(format!(
            "{name}: in KNOWN_DROPPED but its row in {TABLE} is not DROPPED (fixed? then remove \
             it from KNOWN_DROPPED)"
        ));
    }

    assert!(
        errors.is_empty(),
        "{} problem(s) with {TABLE}:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn status_words_are_whole_words() {
    assert_eq!(status_word("served"), Some("served"));
    assert_eq!(status_word("served: OCI process.env"), Some("served"));
    assert_eq!(status_word("not filled: no swap"), Some("not filled"));
    assert_eq!(status_word("DROPPED: not read"), Some("DROPPED"));
    assert_eq!(status_word("servedx"), None);
    assert_eq!(status_word("dropped"), None);
    assert_eq!(status_word("Served"), None);
    assert_eq!(status_word(""), None);
}

#[test]
fn rows_and_sections_parse() {
    let text = "# t\n\n| field | berth |\n## A\n\n| field | berth |\n|---|---|\n| `x` | served |\n\
                | y | ignored: because | extra |\n## B\nNo fields.\n";
    let mut errors = Vec::new();
    let sections = parse(text, &mut errors);
    assert_eq!(sections.len(), 2);
    assert_eq!(sections[0].name, "A");
    assert_eq!(sections[0].rows.len(), 1);
    assert_eq!(sections[0].rows[0].field, "x");
    assert_eq!(sections[0].rows[0].status, "served");
    assert!(sections[1].rows.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("3 cells"), "{errors:?}");
}
