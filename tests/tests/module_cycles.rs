//! Modules of each crate import each other without cycles (issue 9: "a shared helper moves down
//! to where both users can reach it, not sideways into one of them").
//!
//! The check is hand-written rather than `cargo-modules dependencies --acyclic`: cargo-modules
//! 0.28 needs rustc 1.98, and installing 0.27 builds rust-analyzer's crates — on the 2-core
//! machine (shared with other builds) it had compiled 135 crates after 5 minutes and was still
//! among the `ra_ap_*` ones. A page of text scanning answers the question in a second. It reads
//! each crate's sources and counts the edges cargo-modules counts as "uses":
//!
//! - a `use` of a path starting with `crate::`, `super::` or `self::` (or, in a module, with the
//!   name of one of its child modules), braces expanded, pointing at the module that defines the
//!   named item — a `pub use` re-export is followed to where the item really lives;
//! - a qualified path of the same kinds written in code (`crate::restore::RestoreSpec { .. }`).
//!
//! A parent's `mod child;` declaration is not a use, and test code (`#[cfg(test)] mod … { }`) and
//! comments are not read. Any strongly connected component of more than one module fails the
//! test, printed with its edges and the lines that make each of them. Known limits: a path that
//! starts with a name brought in by a `use` of a module is counted at that `use`; macros are not
//! expanded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles known to exist, by crate and the sorted modules of the component: none. A listed cycle
/// that no longer exists fails the test too, so the list never goes stale.
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

#[test]
fn no_crate_has_a_module_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut failures = Vec::new();
    for (krate, entry) in [
        ("common", "common/src/lib.rs"),
        ("sidecar", "sidecar/src/main.rs"),
        ("controller", "controller/src/lib.rs"),
        ("controller-bin", "controller/src/main.rs"),
        ("tests", "tests/src/lib.rs"),
    ] {
        let entry = root.join(entry);
        if !entry.exists() {
            continue;
        }
        let graph = ModuleGraph::read(&entry);
        let known: BTreeSet<Vec<String>> = KNOWN_CYCLES
            .iter()
            .filter(|(k, _)| *k == krate)
            .map(|(_, m)| m.iter().map(|s| s.to_string()).collect())
            .collect();
        let found = graph.cycles();
        for component in &found {
            if !known.contains(component) {
                failures.push(format!(
                    "{krate}: a module import cycle:\n{}",
                    graph.describe(component)
                ));
            }
        }
        for stale in known.iter().filter(|k| !found.contains(*k)) {
            failures.push(format!(
                "{krate}: the cycle {stale:?} no longer exists; remove it from KNOWN_CYCLES"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// One crate's modules and the "uses" edges between them.
struct ModuleGraph {
    /// Module path (`""` for the crate root, `postgres::files`) → its source file.
    modules: BTreeMap<String, PathBuf>,
    /// Module → names it re-exports (`pub use a::B;`) → the path they come from.
    reexports: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// (from, to) → where the edge is written (`file:line`).
    edges: BTreeMap<(String, String), Vec<String>>,
}

impl ModuleGraph {
    fn read(entry: &Path) -> Self {
        let mut graph = ModuleGraph {
            modules: BTreeMap::new(),
            reexports: BTreeMap::new(),
            edges: BTreeMap::new(),
        };
        graph.collect_modules(String::new(), entry);
        let mut uses = Vec::new();
        for (module, file) in &graph.modules {
            let text = std::fs::read_to_string(file).expect("read a source file");
            let code = strip(&text);
            for (line, path, is_pub_use) in paths_in(&code) {
                let at = format!("{}:{}", file.display(), line);
                if let Some(abs) = graph.absolute(module, &path) {
                    if is_pub_use {
                        if let Some(last) = abs.last() {
                            graph
                                .reexports
                                .entry(module.clone())
                                .or_default()
                                .insert(last.clone(), abs.clone());
                        }
                    }
                    uses.push((module.clone(), abs, at));
                }
            }
        }
        for (from, abs, at) in uses {
            let to = graph.defining_module(&abs, 0);
            if to != from {
                graph.edges.entry((from, to)).or_default().push(at);
            }
        }
        graph
    }

    /// Follows `mod name;` declarations from `file` (the source of module `path`).
    fn collect_modules(&mut self, path: String, file: &Path) {
        let text = std::fs::read_to_string(file).expect("read a source file");
        self.modules.insert(path.clone(), file.to_path_buf());
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().map(Path::to_path_buf),
            _ => file
                .parent()
                .map(|p| p.join(file.file_stem().expect("a file name"))),
        }
        .expect("a source directory");
        for line in strip(&text).lines() {
            let line = line.trim();
            let decl = line
                .strip_prefix("pub ")
                .or_else(|| line.strip_prefix("pub(crate) "))
                .unwrap_or(line);
            let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) else {
                continue;
            };
            let child = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}::{name}")
            };
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(name).join("mod.rs");
            let file = if flat.exists() { flat } else { nested };
            self.collect_modules(child, &file);
        }
    }

    /// `path` written in `module`, as segments from the crate root; `None` when it leaves the
    /// crate (std, other crates).
    fn absolute(&self, module: &str, path: &[String]) -> Option<Vec<String>> {
        let mut at: Vec<String> = split(module);
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop();
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                let mut child = at.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child.join("::")) {
                    return None;
                }
            }
            None => return None,
        }
        at.extend(rest.iter().cloned());
        Some(at)
    }

    /// The module that defines what `abs` names: its longest module prefix, with re-exports of
    /// that module followed.
    fn defining_module(&self, abs: &[String], depth: usize) -> String {
        let mut n = abs.len();
        while n > 0 && !self.modules.contains_key(&abs[..n].join("::")) {
            n -= 1;
        }
        let module = abs[..n].join("::");
        if depth < 8 && n < abs.len() {
            if let Some(target) = self.reexports.get(&module).and_then(|r| r.get(&abs[n])) {
                let mut next = target.clone();
                next.extend(abs[n + 1..].iter().cloned());
                return self.defining_module(&next, depth + 1);
            }
        }
        module
    }

    /// Strongly connected components of more than one module, each as sorted module names.
    fn cycles(&self) -> BTreeSet<Vec<String>> {
        let nodes: Vec<&String> = self.modules.keys().collect();
        let index: BTreeMap<&String, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (from, to) in self.edges.keys() {
            if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
                next[a].push(b);
            }
        }
        tarjan(&next)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> = c.iter().map(|&i| display(nodes[i])).collect();
                names.sort();
                names
            })
            .collect()
    }

    /// The component's edges with where each is written, and one cycle through it.
    fn describe(&self, component: &[String]) -> String {
        let inside: BTreeSet<&String> = component.iter().collect();
        let mut out = format!("  modules: {}\n", component.join(", "));
        for ((from, to), at) in &self.edges {
            let (from, to) = (display(from), display(to));
            if inside.contains(&from) && inside.contains(&to) {
                out.push_str(&format!("  {from} -> {to}   ({})\n", at.join(", ")));
            }
        }
        out
    }
}

fn display(module: &str) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.to_string()
    }
}

fn split(module: &str) -> Vec<String> {
    if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    }
}

/// The source without comments, string literals' contents and `#[cfg(test)]` modules; line
/// breaks are kept so line numbers stay right.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == 'r' && chars.get(i + 1) == Some(&'#') && chars.get(i + 2) == Some(&'"') {
            i += 3;
            while i < chars.len() && !(chars[i] == '"' && chars.get(i + 1) == Some(&'#')) {
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 2;
        } else if c == '\'' && chars.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    remove_test_modules(&out)
}

/// Blanks `#[cfg(test)] mod name { … }` blocks, keeping their line breaks.
fn remove_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        let open = trimmed.find('{');
        let semi = trimmed.find(';');
        if !is_mod || open.is_none() || semi.is_some_and(|s| Some(s) < open) {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        }
        out.push_str(&rest[..at]);
        let start = at + "#[cfg(test)]".len() + (after.len() - trimmed.len());
        let body = &rest[start..];
        let mut depth = 0usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.extend(rest[at..start + end].chars().filter(|&c| c == '\n'));
        rest = &rest[(start + end).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Every path of interest in `code`: `(line, segments, is a pub use)`, `use` trees expanded.
fn paths_in(code: &str) -> Vec<(usize, Vec<String>, bool)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut i = 0;
    while i < bytes.len() {
        let word_start = i == 0 || !is_ident(bytes[i - 1]);
        if word_start && code[i..].starts_with("use ") {
            let is_pub = code[..i].trim_end().ends_with("pub")
                || code[..i].trim_end().ends_with("pub(crate)");
            let end = code[i..].find(';').map_or(bytes.len(), |e| i + e);
            let tree = compact_use_tree(&code[i + 4..end]);
            for path in expand(&tree) {
                found.push((line_of(i), path, is_pub));
            }
            i = end;
            continue;
        }
        if word_start && is_ident(bytes[i]) {
            let mut j = i;
            while j < bytes.len() && (is_ident(bytes[j]) || code[j..].starts_with("::")) {
                j += if bytes[j] == b':' { 2 } else { 1 };
            }
            let path = &code[i..j];
            if path.contains("::") {
                let segments: Vec<String> = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                found.push((line_of(i), segments, false));
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `a::{b,c::{self,d}}` → `a::b`, `a::c`, `a::c::d` (`tree` without whitespace; `x as y`
/// already reduced to `x`).
fn expand(tree: &str) -> Vec<Vec<String>> {
    expand_braced(tree)
}

/// A `use` tree without whitespace and renames: `a::{b as c, d}` → `a::{b,d}`.
fn compact_use_tree(text: &str) -> String {
    let mut out = String::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            if let Some(alias) = words.next() {
                out.extend(
                    alias
                        .chars()
                        .filter(|c| !(c.is_alphanumeric() || *c == '_')),
                );
            }
        } else {
            out.push_str(word);
        }
    }
    out
}

fn expand_braced(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        return vec![tree
            .split("::")
            .filter(|s| !s.is_empty() && *s != "*")
            .map(str::to_string)
            .collect()];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        if part == "self" {
            out.push(prefix.clone());
            continue;
        }
        for tail in expand_braced(part) {
            let mut path = prefix.clone();
            path.extend(tail);
            out.push(path);
        }
    }
    out
}

/// Tarjan's strongly connected components over `next` (adjacency lists).
fn tarjan(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.next[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = next.len();
    let mut s = State {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn use_trees_expand_and_cycles_are_found() {
    assert_eq!(
        expand("crate::a::{self,b,c::{d,e}}"),
        vec![
            vec!["crate", "a"],
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c", "d"],
            vec!["crate", "a", "c", "e"],
        ]
    );
    assert_eq!(expand("super::x::Y"), vec![vec!["super", "x", "Y"]]);
    let scc = tarjan(&[vec![1], vec![2], vec![0], vec![]]);
    assert!(scc.iter().any(|c| c.len() == 3));
    let code = strip("// use crate::a;\nlet x = \"crate::b\";\n#[cfg(test)]\nmod tests {\n use super::*;\n}\ncrate::c::f();");
    let paths: Vec<_> = paths_in(&code)
        .into_iter()
        .map(|(l, p, _)| (l, p))
        .collect();
    assert_eq!(
        paths,
        vec![(7, vec!["crate".into(), "c".into(), "f".into()])]
    );
}
