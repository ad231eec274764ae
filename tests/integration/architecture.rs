//! The folder tree is the architecture: this suite reads every `crate::…`, `super::…` and
//! `pyrogate::…` path in `src/`, builds the module dependency graph, and fails on a cycle
//! between sibling modules or on an import that points the wrong way between layers.
//!
//! Print the graph with `cargo nextest run architecture --no-capture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up; a module may use its own layer and the ones below it.
/// `authority` sits above `node` because the all-in-one server mounts the node's ingest plane.
const LAYERS: &[&str] = &["core", "config", "edge", "node", "authority", "cli"];

type Module = Vec<String>;

fn rank(module: &Module) -> Option<usize> {
    let top = module.first()?;
    LAYERS.iter().position(|l| l == top)
}

/// `src/core/jws.rs` → `core::jws`; `src/cli/bench/mod.rs` → `cli::bench`; the binary's
/// `src/main.rs` is `cli`'s parent and the library's `src/lib.rs` the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every path that starts with `crate::`, `super::` or `pyrogate::`, as segments.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':') {
            let start = i;
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < bytes.len() && is_ident(bytes[j]) {
                    j += 1;
                }
                segments.push(line[s..j].to_owned());
                if line[j..].starts_with("::") && j + 2 < bytes.len() && is_ident(bytes[j + 2]) {
                    j += 2;
                } else {
                    break;
                }
            }
            if segments.len() > 1 && matches!(segments[0].as_str(), "crate" | "super" | "pyrogate")
            {
                found.push(segments);
            }
            i = j.max(start + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// The module a path refers to: the longest prefix that names a known module.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>, bin: bool) -> Module {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path[0].as_str() {
        "crate" if bin => base = vec!["cli".into()],
        "crate" | "pyrogate" => {}
        "super" => {
            base = from.clone();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            let mut full = base.clone();
            full.extend(rest.iter().cloned());
            return longest_known(&full, modules);
        }
        _ => unreachable!(),
    }
    if path[0] != "super" {
        rest = &rest[1..];
    }
    let mut full = base;
    full.extend(rest.iter().cloned());
    longest_known(&full, modules)
}

fn longest_known(full: &[String], modules: &BTreeSet<Module>) -> Module {
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

/// An edge between two modules, lifted to the children of their lowest common ancestor:
/// `core::jws → core::verifier` stays, `node::ingest::forward → edge::metrics` becomes
/// `node → edge`. An edge to an ancestor or a descendant is a parent/child relation, not a
/// dependency between rooms, and is dropped.
fn lift(from: &Module, to: &Module) -> Option<(Module, Module)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

struct Graph {
    modules: BTreeSet<Module>,
    /// Every reference between distinct modules, with one file:line where it is made.
    edges: BTreeMap<(Module, Module), String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    // `main.rs` and `lib.rs` are both roots; the binary's modules live under `cli`.
    modules.insert(vec!["cli".into()]);
    let mut edges = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let bin = module.first().is_some_and(|m| m == "cli") || file.ends_with("main.rs");
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for path in paths_in(line) {
                let target = resolve(&module, &path, &modules, bin);
                if target != module && !target.is_empty() {
                    let at = format!(
                        "{}:{}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        n + 1
                    );
                    edges.entry((module.clone(), target)).or_insert(at);
                }
            }
        }
    }
    Graph { modules, edges }
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Cycles in the lifted graph, each as the list of modules on it.
fn cycles(lifted: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's strongly connected components; every component of more than one module holds
    // a cycle.
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let succ: Vec<Module> = s.graph.get(v).into_iter().flatten().cloned().collect();
        for w in succ {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph: lifted,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in lifted.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn lifted(g: &Graph) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in g.edges.keys() {
        if let Some((a, b)) = lift(from, to) {
            out.entry(a).or_default().insert(b);
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    let lifted = lifted(&g);
    println!("module dependency graph ({} modules):", g.modules.len());
    for (from, to) in &lifted {
        let to: Vec<String> = to.iter().map(name).collect();
        println!("  {} -> {}", name(from), to.join(", "));
    }
    let found = cycles(&lifted);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let names: Vec<String> = c.iter().map(name).collect();
            let witnesses: Vec<String> = g
                .edges
                .iter()
                .filter(|((f, t), _)| {
                    lift(f, t).is_some_and(|(a, b)| c.contains(&a) && c.contains(&b))
                })
                .map(|((f, t), at)| format!("{} -> {} ({at})", name(f), name(t)))
                .collect();
            format!("{{{}}}: {}", names.join(", "), witnesses.join("; "))
        })
        .collect();
    println!("cycles: {}", found.len());
    assert!(found.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn imports_point_down_the_layers() {
    let g = graph();
    let wrong: Vec<String> = g
        .edges
        .iter()
        .filter(|((from, to), _)| match (rank(from), rank(to)) {
            (Some(a), Some(b)) => b > a,
            _ => false,
        })
        .map(|((from, to), at)| format!("{} -> {} ({at})", name(from), name(to)))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports that point up the layers {LAYERS:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_graph_reader_sees_a_planted_cycle() {
    let a: Module = vec!["core".into(), "a".into()];
    let b: Module = vec!["core".into(), "b".into()];
    let mut graph = BTreeMap::new();
    graph.insert(a.clone(), BTreeSet::from([b.clone()]));
    graph.insert(b.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(cycles(&graph).len(), 1);
    let modules = BTreeSet::from([a.clone(), b.clone(), vec!["core".into()]]);
    let p = paths_in("use crate::core::b::Thing; let x = super::super::core::a::f();");
    assert_eq!(p.len(), 2);
    assert_eq!(resolve(&a, &p[0], &modules, false), b);
    assert_eq!(
        lift(&vec!["node".into(), "x".into()], &a),
        Some((vec!["node".into()], vec!["core".into()]))
    );
    assert_eq!(lift(&a, &vec!["core".into()]), None);
}
