//! The house has floors (ARCHITECTURE.md): a module of `src/` imports only from floors
//! below its own, so no import runs upward and no two top-level modules import each
//! other. This test reads the sources and holds the rule.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module of `src/` and its floor, from the ground up. The clients beside
/// the server may use the ground and the wire only.
const FLOORS: &[(&str, u32)] = &[
    ("collections", 0),
    ("coop", 0),
    ("protocol", 1),
    ("client", 2),
    ("console", 2),
    ("store", 2),
    ("auth", 3),
    ("manager", 4),
    ("commands", 5),
    ("cluster", 5),
    ("framework", 6),
    ("conn", 7),
    ("http", 7),
    ("server", 8),
    ("app", 9),
];

fn floor(module: &str) -> Option<u32> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

/// The source without comments and without `#[cfg(test)]` modules (tests may reach
/// anywhere).
fn code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules a piece of code names through `crate::` (also grouped:
/// `crate::{a::X, b::Y}`).
fn named_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
        rest = after;
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_import_runs_up_a_floor() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = BTreeMap::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let own = floor(&module).unwrap_or_else(|| {
            panic!("src/{first} has no floor: add it to FLOORS and to ARCHITECTURE.md")
        });
        let text = std::fs::read_to_string(file).unwrap();
        for target in named_modules(&code(&text)) {
            if target == module {
                continue;
            }
            checked += 1;
            let theirs = floor(&target).unwrap_or_else(|| {
                panic!(
                    "{} names crate::{target}, which has no floor",
                    rel.display()
                )
            });
            if theirs >= own {
                upward
                    .entry(format!("{} -> crate::{target}", rel.display()))
                    .or_insert((own, theirs));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports read: is the reader broken?"
    );
    assert!(
        upward.is_empty(),
        "imports that run up (or sideways on one floor): {upward:#?}"
    );
}

#[test]
fn the_reader_sees_upward_imports() {
    let sample = "use crate::server::Config;\nuse crate::{conn::X, store::Y};\n// crate::manager in a comment\n#[cfg(test)]\nmod tests { use crate::commands; }\nfn f() { crate::coop::nap(); }";
    assert_eq!(
        named_modules(&code(sample)),
        ["server", "conn", "store", "coop"]
    );
}
