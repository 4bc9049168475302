//! The file's shape, checked before serde reads it, so that every misplaced or mistyped key is
//! reported at once (serde stops at the first), each at its line and column, with the nearest
//! known key for a typo and the expected form for a wrong type (`upload = 20000000` ->
//! `"20mbit"`; `[tenant]` -> `[[tenant]]`).
//!
//! The key lists mirror the `raw` structs; a unit test keeps the two in step.

use toml_edit::{ImDocument, Item, TableLike, Value};

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Str,
    Int,
    StrList,
    /// Ports: numbers or `"first-last"` strings.
    PortList,
    /// A table of strings (`eips`).
    StrMap,
}

/// (key, kind, required, example of a good value)
type Key = (&'static str, Kind, bool, &'static str);

pub(super) const SHAPER: &[Key] = &[
    ("interface", Kind::Str, false, "\"eth0\""),
    ("tap", Kind::Str, true, "\"tg0\""),
    ("redirect", Kind::Str, false, "\"netdev\""),
    ("state_dir", Kind::Str, false, "\"/run/tollgate\""),
    ("table", Kind::Int, false, "7468"),
    ("mark", Kind::Int, false, "29799"),
    ("rule_priority", Kind::Int, false, "1"),
    ("metrics", Kind::Str, false, "\"127.0.0.1:9464\""),
];

pub(super) const GATEWAY: &[Key] = &[
    ("public", Kind::Str, true, "\"eth0\""),
    ("underlay", Kind::Str, true, "\"eth1\""),
    ("underlay_address", Kind::Str, true, "\"172.31.0.1\""),
    ("tunnel", Kind::Str, true, "\"vxlan\""),
    ("tunnel_mode", Kind::Str, true, "\"external\""),
    ("isolation", Kind::Str, true, "\"vrf\""),
    ("offload", Kind::Str, false, "\"on\""),
    ("public_gateway", Kind::Str, false, "\"198.51.100.254\""),
    ("vxlan_port", Kind::Int, false, "4789"),
    ("rule_priority", Kind::Int, false, "1000"),
    ("state_dir", Kind::Str, false, "\"/run/tollgate\""),
    ("shards", Kind::Int, false, "40"),
    ("shard_prefix", Kind::Str, false, "\"tollgate-shard\""),
];

pub(super) const TENANT: &[Key] = &[
    ("name", Kind::Str, true, "\"alpha\""),
    ("sources", Kind::StrList, false, "[\"10.0.0.0/24\"]"),
    ("upload", Kind::Str, false, "\"20mbit\""),
    ("burst", Kind::Str, false, "\"64kb\""),
    ("queue", Kind::Str, false, "\"1mb\""),
    ("queue_frames", Kind::Int, false, "1024"),
    ("flows", Kind::Int, false, "32"),
    ("aqm", Kind::Str, false, "\"codel\""),
    ("gso", Kind::Str, false, "\"auto\""),
    ("codel_target", Kind::Str, false, "\"5ms\""),
    ("codel_interval", Kind::Str, false, "\"100ms\""),
    ("ports", Kind::PortList, false, "[22, \"8000-8100\"]"),
    ("interfaces", Kind::StrList, false, "[\"eth1\"]"),
    ("id", Kind::Int, false, "1000"),
    ("peer", Kind::Str, false, "\"172.31.0.11\""),
    ("networks", Kind::StrList, false, "[\"10.0.0.0/24\"]"),
    ("gateway_ip", Kind::Str, false, "\"10.0.0.1\""),
    (
        "eips",
        Kind::StrMap,
        false,
        "{ \"198.51.100.10\" = \"10.0.0.7\" }",
    ),
    ("allow_in", Kind::StrList, false, "[\"tcp/22\"]"),
    ("deny_out", Kind::StrList, false, "[\"tcp/25\"]"),
    ("peer_mac", Kind::Str, false, "\"02:00:00:00:10:07\""),
];

const SECTIONS: [&str; 3] = ["shaper", "gateway", "tenant"];

/// One problem: byte offset, dotted key, message.
pub(super) type Problem = (usize, String, String);

/// Every shape problem of the document, in file order.
pub(super) fn check(doc: &ImDocument<&str>) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = doc.as_table();
    for (k, item) in root.iter() {
        let at = root.key(k).and_then(|k| k.span()).map_or(0, |s| s.start);
        match (k, item) {
            ("shaper" | "gateway", _) => match item.as_table_like() {
                Some(t) => {
                    let keys = if k == "shaper" { SHAPER } else { GATEWAY };
                    table(t, k, keys, span(item), &mut out);
                }
                None => out.push((
                    at,
                    k.to_string(),
                    format!("expected a [{k}] section, found {}", type_of(item)),
                )),
            },
            ("tenant", Item::ArrayOfTables(a)) => {
                for (i, t) in a.iter().enumerate() {
                    table(
                        t,
                        &format!("tenant[{i}]"),
                        TENANT,
                        t.span().map(|s| s.start),
                        &mut out,
                    );
                }
            }
            ("tenant", Item::Table(_)) => out.push((
                span(item).unwrap_or(at),
                "tenant".into(),
                "write [[tenant]] (two brackets: each tenant is one entry of a list), not [tenant]"
                    .into(),
            )),
            ("tenant", _) => out.push((
                at,
                "tenant".into(),
                format!("expected [[tenant]] sections, found {}", type_of(item)),
            )),
            _ => out.push((at, k.to_string(), unknown(k, &SECTIONS))),
        }
    }
    out.sort_by_key(|p| p.0);
    out
}

fn span(item: &Item) -> Option<usize> {
    item.span().map(|s| s.start)
}

fn table(t: &dyn TableLike, path: &str, keys: &[Key], at: Option<usize>, out: &mut Vec<Problem>) {
    let names: Vec<&str> = keys.iter().map(|k| k.0).collect();
    for (k, item) in t.iter() {
        let pos = t
            .key(k)
            .and_then(|k| k.span())
            .map(|s| s.start)
            .or_else(|| span(item))
            .or(at)
            .unwrap_or(0);
        let key = format!("{path}.{k}");
        match keys.iter().find(|d| d.0 == k) {
            None => out.push((pos, key, unknown(k, &names))),
            Some(&(_, kind, _, example)) => {
                if let Some(found) = mismatch(item, kind) {
                    out.push((
                        span(item).unwrap_or(pos),
                        key,
                        format!(
                            "expected {}, found {found}: write it like {k} = {example}",
                            kind_name(kind)
                        ),
                    ));
                }
            }
        }
    }
    for &(k, _, required, example) in keys {
        if required && t.get(k).is_none() {
            out.push((
                at.unwrap_or(0),
                format!("{path}.{k}"),
                format!("missing: add {k} = {example}"),
            ));
        }
    }
}

/// "unknown key" with the nearest known one, when one is close.
fn unknown(k: &str, known: &[&str]) -> String {
    let near = known
        .iter()
        .map(|c| (distance(k, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min();
    match near {
        Some((_, c)) => format!("unknown key {k:?}: did you mean {c:?}?"),
        None => format!("unknown key {k:?}; known here: {}", known.join(", ")),
    }
}

/// Levenshtein distance (keys are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "a string",
        Kind::Int => "an integer",
        Kind::StrList => "a list of strings",
        Kind::PortList => "a list of ports",
        Kind::StrMap => "a table of strings",
    }
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number with a fraction",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::InlineTable(_) => "a table",
    }
}

fn type_of(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_type(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "a list of tables",
    }
}

/// What was found instead of `kind`, if it does not fit.
fn mismatch(item: &Item, kind: Kind) -> Option<String> {
    let fits = match kind {
        Kind::Str => item.as_str().is_some(),
        Kind::Int => item.as_integer().is_some(),
        Kind::StrList | Kind::PortList => {
            let Some(a) = item.as_array() else {
                return Some(type_of(item).into());
            };
            return a
                .iter()
                .find(|v| !(v.is_str() || (kind == Kind::PortList && v.as_integer().is_some())))
                .map(|v| format!("a list holding {}", value_type(v)));
        }
        Kind::StrMap => {
            let Some(t) = item.as_table_like() else {
                return Some(type_of(item).into());
            };
            return t
                .iter()
                .find(|(_, v)| v.as_str().is_none())
                .map(|(_, v)| format!("a table holding {}", type_of(v)));
        }
    };
    (!fits).then(|| type_of(item).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        check(&ImDocument::parse(text).unwrap())
    }

    #[test]
    fn all_problems_at_once_with_suggestions() {
        let p = problems(
            "[shaper]\ntap = \"tg0\"\nintreface = \"eth0\"\n\n[[tenant]]\nname = \"a\"\nupload = 20000000\n\n[[tenant]]\nnmae = \"b\"\nsources = [\"10.0.0.0/8\", 7]\n",
        );
        let keys: Vec<&str> = p.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(
            keys,
            [
                "shaper.intreface",
                "tenant[0].upload",
                "tenant[1].name",
                "tenant[1].nmae",
                "tenant[1].sources",
            ],
            "{p:?}"
        );
        assert!(p[0].2.contains("did you mean \"interface\""), "{}", p[0].2);
        assert!(p[1].2.contains("found an integer") && p[1].2.contains("\"20mbit\""));
        assert!(p[2].2.contains("missing"));
        assert!(p[3].2.contains("did you mean \"name\""));
        assert!(p[4].2.contains("a list holding an integer"));
    }

    #[test]
    fn a_single_bracket_tenant_is_explained() {
        let p = problems("[tenant]\nname = \"a\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].2.contains("[[tenant]]"), "{p:?}");
        let p = problems("[tennant]\n");
        assert!(p[0].2.contains("did you mean \"tenant\""), "{p:?}");
    }

    #[test]
    fn key_lists_match_what_serde_reads() {
        // every listed key, with a value of its kind, is accepted by the raw structs
        let value = |k: Kind| match k {
            Kind::Str => "\"x\"",
            Kind::Int => "1",
            Kind::StrList => "[\"x\"]",
            Kind::PortList => "[1]",
            Kind::StrMap => "{ a = \"b\" }",
        };
        for (section, keys, header) in [
            ("shaper", SHAPER, "[shaper]"),
            ("gateway", GATEWAY, "[gateway]"),
            ("tenant", TENANT, "[[tenant]]"),
        ] {
            let mut text = format!("{header}\n");
            for (k, kind, _, _) in keys {
                text += &format!("{k} = {}\n", value(*kind));
            }
            let parsed: Result<super::super::raw::RawConfig, _> = toml::from_str(&text);
            assert!(parsed.is_ok(), "{section}: {:?}", parsed.err());
            assert!(
                problems(&text).is_empty(),
                "{section}: {:?}",
                problems(&text)
            );
        }
    }
}
