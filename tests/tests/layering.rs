//! The library's layering, read off its sources (`../shared/DESIGN.md` "Layering", README
//! "Design notes"): `domain ← ports ← services ← adapters / handlers ← entry ← functions`.
//! Every import points down a layer or within one, and no two units need each other, directly
//! or through others. The reader is a small lexer (comments, strings and `#[cfg(test)]` modules
//! left out), a `use`-tree expander (groups, globs, renames, `self`) and a resolver that follows
//! a path only as far as it names modules (the crate root's re-exports are read off `lib.rs`);
//! a path it cannot place fails the test rather than being skipped.

use std::collections::{BTreeMap, BTreeSet};

/// Code without comments, the contents of string and character literals, or `\r`.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().filter(|c| *c != '\r').collect();
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'`, `'\n'`, `'\u{..}'` — not a lifetime (`'a`).
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!((chars.get(i + 1), chars.get(i + 2)), (Some('\\'), _) | (Some(_), Some('\'')))
}

/// The code without its `#[cfg(test)]` items (a test module may use anything).
fn without_tests(code: &str) -> String {
    let mut out = code.to_owned();
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at..];
        let end = match (rest.find('{'), rest.find(';')) {
            (Some(brace), semi) if semi.is_none_or(|s| brace < s) => {
                let mut depth = 0;
                let mut end = rest.len();
                for (k, ch) in rest.char_indices().skip(brace) {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (_, Some(semi)) => semi + 1,
            _ => rest.len(),
        };
        out.replace_range(at..at + end, "");
    }
    out
}

/// The paths a `use` tree or a path expression starting at `text` names, groups expanded,
/// renames dropped, `self` folded into its prefix and a glob ending its path.
fn expand(text: &str) -> Vec<Vec<String>> {
    fn tree(chars: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
            if *i >= chars.len() {
                break;
            }
            if chars[*i] == '{' {
                *i += 1;
                loop {
                    tree(chars, i, &path, out);
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    if chars.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            if chars[*i] == '*' {
                *i += 1;
                out.push(path);
                return;
            }
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            let word: String = chars[start..*i].iter().collect();
            if word.is_empty() {
                out.push(path);
                return;
            }
            if word != "self" {
                path.push(word);
            }
            let rest: String = chars[*i..chars.len().min(*i + 2)].iter().collect();
            if rest == "::" {
                *i += 2;
                continue;
            }
            // `as alias` (skipped), or the end of the path.
            let mut j = *i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let as_: String = chars[j..chars.len().min(j + 3)].iter().collect();
            if as_.starts_with("as") && as_.chars().nth(2).is_some_and(char::is_whitespace) {
                j += 2;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                *i = j;
            }
            out.push(path);
            return;
        }
        out.push(path);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    tree(&chars, &mut 0, &[], &mut out);
    out
}

struct Source {
    path: Vec<String>,
    code: String,
}

fn library() -> (Vec<Source>, BTreeMap<String, Vec<String>>) {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = actiongate_local::workspace_root().join("shared/src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let sources: Vec<Source> = files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&root).unwrap().with_extension("");
            let mut path: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            Source { path, code: without_tests(&code_only(&std::fs::read_to_string(&file).unwrap())) }
        })
        .collect();
    // The crate root's re-exports: `pub use a::b::{c, d};` makes `crate::c` mean `crate::a::b::c`.
    let lib = sources.iter().find(|s| s.path.is_empty()).expect("lib.rs");
    let mut reexports = BTreeMap::new();
    for (at, _) in lib.code.match_indices("pub use ") {
        for full in expand(&lib.code[at + "pub use ".len()..]) {
            if let Some(name) = full.last() {
                reexports.insert(name.clone(), full.clone());
            }
        }
    }
    (sources, reexports)
}

/// The unit a module belongs to: `domain::<file>`, `ports::<port>`, `services::<service>`,
/// `adapters::<system>`, a top-level module (`handlers`, `entry`, `config`, `telemetry`), a
/// layer's root (`domain`, …: it only declares and re-exports), or `crate`.
fn unit_of(path: &[String]) -> String {
    match path.first().map(String::as_str) {
        Some("domain" | "ports" | "services" | "adapters") if path.len() > 1 => path[..2].join("::"),
        Some(top) => top.to_owned(),
        None => "crate".to_owned(),
    }
}

/// The units `source` uses through `crate::` and `super::` paths.
fn units_used(
    source: &Source,
    modules: &BTreeSet<Vec<String>>,
    reexports: &BTreeMap<String, Vec<String>>,
) -> BTreeSet<String> {
    let resolve = |mut segments: Vec<String>| -> String {
        if let Some(full) = segments.first().and_then(|first| reexports.get(first)) {
            segments.splice(0..1, full.iter().cloned());
        }
        let mut known = Vec::new();
        for segment in segments {
            known.push(segment);
            if !modules.contains(&known) {
                known.pop();
                break;
            }
        }
        unit_of(&known)
    };
    let code = &source.code;
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        for path in expand(&code[at + "crate::".len()..]) {
            used.insert(resolve(path));
        }
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("super::") || code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            ups += 1;
            rest = after;
        }
        let mut base = source.path.clone();
        base.truncate(base.len().saturating_sub(ups));
        for tail in expand(rest) {
            let mut full = base.clone();
            full.extend(tail);
            used.insert(resolve(full));
        }
    }
    used.remove(&unit_of(&source.path));
    used
}

/// Whether a unit may use another (besides itself).
fn allowed(from: &str, to: &str) -> bool {
    let layer = |u: &str| u.split("::").next().unwrap_or("").to_owned();
    let to_layer = layer(to);
    let among = |ok: &[&str]| ok.contains(&to_layer.as_str());
    match layer(from).as_str() {
        "domain" => among(&["domain"]),
        "ports" => among(&["domain", "ports"]),
        "services" => among(&["domain", "ports", "services", "telemetry"]),
        "adapters" => among(&["domain", "ports", "adapters", "telemetry"]),
        // The handlers are adapters too; `Dependencies::from_config` wires them from configuration.
        "handlers" => among(&["domain", "ports", "adapters", "config", "telemetry"]),
        "config" => among(&["domain", "ports", "adapters"]),
        "telemetry" => false,
        // The entry points route events to the services through the adapters.
        "entry" => to_layer != "entry" && to_layer != "crate",
        _ => false,
    }
}

fn graph(sources: &[Source], reexports: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.path.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        edges.entry(unit_of(&source.path)).or_default().extend(units_used(source, &modules, reexports));
    }
    edges
}

/// Pairs of units that need each other, directly or through others. Layer roots only declare
/// and re-export, so they are not part of a cycle.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let roots = ["crate", "domain", "ports", "services", "adapters"];
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_owned()];
        while let Some(u) = stack.pop() {
            for v in edges.get(&u).into_iter().flatten().filter(|v| !roots.contains(&v.as_str())) {
                if seen.insert(v.clone()) {
                    stack.push(v.clone());
                }
            }
        }
        seen
    };
    let mut found = BTreeSet::new();
    for (a, targets) in edges.iter().filter(|(a, _)| !roots.contains(&a.as_str())) {
        for b in targets.iter().filter(|b| !roots.contains(&b.as_str())) {
            if reach(b).contains(a) {
                let mut pair = vec![a.clone(), b.clone()];
                pair.sort();
                found.insert(pair);
            }
        }
    }
    found.into_iter().collect()
}

fn wrong_way(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    edges
        .iter()
        .filter(|(from, _)| from.as_str() != "crate")
        .flat_map(|(from, to)| to.iter().filter(|t| !allowed(from, t)).map(move |t| format!("{from} → {t}")))
        .collect()
}

#[test]
fn the_layers_point_one_way_and_no_module_needs_itself_back() {
    let (sources, reexports) = library();
    assert!(sources.len() > 60, "the library's files are there: {}", sources.len());
    assert!(reexports.contains_key("policy") && reexports.contains_key("Clock"), "{reexports:?}");
    let edges = graph(&sources, &reexports);
    // `LAYERING_PRINT=1` shows the graph the checks read.
    if std::env::var_os("LAYERING_PRINT").is_some() {
        for (from, to) in &edges {
            eprintln!("{from} → {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
        }
    }
    for unit in
        ["domain::policy", "ports::store", "services::sweep", "adapters::aws", "adapters::apigw", "handlers", "entry"]
    {
        assert!(edges.contains_key(unit), "{unit} is a unit: {:?}", edges.keys().collect::<Vec<_>>());
    }
    assert_eq!(wrong_way(&edges), Vec::<String>::new(), "imports pointing the wrong way");
    assert_eq!(cycles(&edges), Vec::<Vec<String>>::new(), "units that need each other");
}

/// The reader sees through the forms an import can take: a cycle or an upward import planted
/// in any of them is found.
#[test]
fn the_check_finds_imports_in_every_form() {
    let planted = [
        ("services::intake", "use crate::services::{sweep::SweepService};", Some("services::sweep")),
        ("services::sweep", "fn f() { crate::services::intake::IntakeService::x(); }", Some("services::intake")),
        ("ports::store", "use crate::services::*;", Some("services")),
        ("ports::queue", "use crate::adapters as a; fn g() { a::aws::x(); }", Some("adapters")),
        ("domain::policy", "use super::super::{ports::store::Store};", Some("ports::store")),
        ("domain::guards", "fn h() { let u = format!(\"https://{}\", crate::handlers::x()); }", Some("handlers")),
        ("adapters::apigw", "use crate::{services::approval::ApprovalService, domain::Action};", Some("services::approval")),
        ("handlers", "use crate::entry::api_intake;", Some("entry")),
        // Mentions in comments, strings and test modules are not imports.
        ("domain::ids", "// crate::services::sweep\nconst X: &str = \"crate::services::sweep\";\n#[cfg(test)]\nmod tests { use crate::services::sweep; }", None),
    ];
    for (unit, line, expect) in planted {
        let (mut sources, reexports) = library();
        let source = sources
            .iter_mut()
            .find(|s| s.path.join("::") == unit || (unit == "handlers" && s.path == ["handlers"]))
            .unwrap();
        source.code.push('\n');
        source.code.push_str(&without_tests(&code_only(line)));
        let edges = graph(&sources, &reexports);
        match expect {
            Some(target) => assert!(edges[unit].contains(target), "{line}: {:?}", edges[unit]),
            None => assert!(wrong_way(&edges).is_empty(), "{line} counted: {:?}", wrong_way(&edges)),
        }
    }
    // A cycle planted across two units, and an import pointing up, fail the checks.
    let (mut sources, reexports) = library();
    for s in sources.iter_mut() {
        match s.path.join("::").as_str() {
            "services::intake" => s.code.push_str("\nuse crate::services::{sweep::SweepService as S};\n"),
            "services::sweep" => s.code.push_str("\nuse crate::services::intake::*;\n"),
            "ports::store" => s.code.push_str("\nuse crate::{adapters::aws::dynamo::DynamoStore};\n"),
            _ => {}
        }
    }
    let edges = graph(&sources, &reexports);
    assert!(cycles(&edges).contains(&vec!["services::intake".to_owned(), "services::sweep".to_owned()]));
    assert!(wrong_way(&edges).contains(&"ports::store → adapters::aws".to_owned()), "{:?}", wrong_way(&edges));
}

#[test]
fn the_lexer_keeps_code_and_drops_the_rest() {
    let code = code_only(
        "let a = \"x // y\"; // crate::services\nlet b = r#\"crate::entry\"#; /* crate::z */ 'c'; fn f<'a>() {}",
    );
    assert!(!code.contains("crate::") && code.contains("let b") && code.contains("fn f<'a>"), "{code}");
    assert_eq!(
        expand("a::{b, c::{d as e, self}, f::*};"),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["a".to_owned(), "c".to_owned(), "d".to_owned()],
            vec!["a".to_owned(), "c".to_owned()],
            vec!["a".to_owned(), "f".to_owned()],
        ]
    );
    assert_eq!(without_tests("a\n#[cfg(test)]\nmod tests { { } }\nb"), "a\n\nb");
}
