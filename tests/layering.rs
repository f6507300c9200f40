//! The layering rule: **no module imports one that imports it back.**
//! Dependencies point one way (leaf types ← actors and broker ← routes ←
//! startup), so every module can be read knowing only the ones below it.
//!
//! The check runs on the crates of this workspace (`src/`, `loadtest/src/`,
//! `simulate/src/` when it exists). A node is a module with its own file
//! (`src/hub/mod.rs` is `hub`, `src/hub/outbox.rs` is `hub::outbox`, `lib.rs`
//! is `crate`; with a library next to it `main.rs` is `main`, a root that may
//! use everything because nothing can use it). Files are found by following
//! the `mod` declarations from the roots, so a file that is not compiled is
//! not checked. An edge is any path naming another module of the same crate:
//! in a `use` (groups, globs, `self`, renames) or anywhere in code and macro
//! arguments (`crate::origin::guard`, `super::Frames`, `outbox::Outbox`),
//! resolved to the longest module prefix. `mod child;` is not an edge, a
//! parent using its child's items is, and a child using `super::` is one to
//! its parent. Items under `#[cfg(test)]` are skipped: tests may import
//! anything. Doc links are not imports and are not counted.
//!
//! Reading a failure: each group is a set of modules that all reach each other
//! (a strongly connected component). Under it every cycle is printed as a
//! chain `a -> b -> a`, one per edge of the group (the shortest cycle through
//! that edge), each edge with the `file:line` and path of one use that makes
//! it. Break a cycle by moving the shared item down (a leaf type used by both)
//! or by passing it in, so that one of the two imports disappears.

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use syn::visit::{self, Visit};

/// One module's source.
pub struct Source {
    pub module: String,
    pub file: String,
    pub text: String,
}

/// `from` names `to`; `at` is one place that does it.
#[derive(Clone, Debug)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub at: String,
}

/// A closed chain of edges: the last one ends where the first starts.
pub struct Cycle(pub Vec<Edge>);

impl Cycle {
    /// `a -> b -> a`
    pub fn chain(&self) -> String {
        let mut s = self.0[0].from.clone();
        for e in &self.0 {
            s = format!("{s} -> {}", e.to);
        }
        s
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {}", self.chain())?;
        for e in &self.0 {
            writeln!(f, "      {} -> {}  at {}", e.from, e.to, e.at)?;
        }
        Ok(())
    }
}

fn parent(m: &str) -> Option<&str> {
    match m.rsplit_once("::") {
        Some((p, _)) => Some(p),
        None if m == "crate" || m == "main" => None,
        None => Some("crate"),
    }
}

fn child(m: &str, name: &str) -> String {
    if m == "crate" {
        name.to_string()
    } else {
        format!("{m}::{name}")
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg") && {
                let t = a.meta.require_list().map(|l| l.tokens.to_string());
                t.is_ok_and(|t| {
                    t.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|w| w == "test")
                        && !t.contains("not")
                })
            })
    })
}

fn item_attrs(i: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match i {
        Const(x) => &x.attrs,
        Enum(x) => &x.attrs,
        ExternCrate(x) => &x.attrs,
        Fn(x) => &x.attrs,
        ForeignMod(x) => &x.attrs,
        Impl(x) => &x.attrs,
        Macro(x) => &x.attrs,
        Mod(x) => &x.attrs,
        Static(x) => &x.attrs,
        Struct(x) => &x.attrs,
        Trait(x) => &x.attrs,
        TraitAlias(x) => &x.attrs,
        Type(x) => &x.attrs,
        Union(x) => &x.attrs,
        Use(x) => &x.attrs,
        _ => &[],
    }
}

/// Walks one file: pass 1 learns which names `use` binds to modules, pass 2
/// records every path that resolves to another module.
struct Walker<'a> {
    krate: &'a str,
    modules: &'a BTreeSet<String>,
    source: &'a Source,
    root: &'static str,
    lexical: Vec<String>,
    aliases: HashMap<(String, String), String>,
    edges: Vec<Edge>,
    collecting_aliases: bool,
}

impl Walker<'_> {
    fn here(&self) -> &str {
        self.lexical.last().map_or(&self.source.module, |s| s)
    }

    /// The module a path names, and whether the whole path is that module.
    fn resolve(&self, segs: &[String], in_use: bool) -> Option<(String, bool)> {
        let here = self.here().to_string();
        let (mut base, mut rest) = match segs.first()?.as_str() {
            "crate" => (self.root.to_string(), &segs[1..]),
            "self" => (here, &segs[1..]),
            "super" => {
                let mut b = here;
                let mut r = segs;
                while r.first().is_some_and(|s| s == "super") {
                    b = parent(&b)?.to_string();
                    r = &r[1..];
                }
                (b, r)
            }
            k if k == self.krate => ("crate".to_string(), &segs[1..]),
            _ if !in_use && segs.len() < 2 => return None,
            first => {
                let key = (here.clone(), first.to_string());
                if self.modules.contains(&child(&here, first)) {
                    (child(&here, first), &segs[1..])
                } else {
                    (self.aliases.get(&key)?.clone(), &segs[1..])
                }
            }
        };
        while let Some(s) = rest.first() {
            if !self.modules.contains(&child(&base, s)) {
                break;
            }
            base = child(&base, s);
            rest = &rest[1..];
        }
        while !self.modules.contains(&base) {
            base = parent(&base)?.to_string();
        }
        Some((base, rest.is_empty()))
    }

    fn record(&mut self, segs: &[String], span: Span, in_use: bool) {
        if let Some((to, _)) = self.resolve(segs, in_use) {
            if to != self.source.module {
                let line = span.start().line;
                let at = format!("{}:{line} `{}`", self.source.file, segs.join("::"));
                self.edges.push(Edge {
                    from: self.source.module.clone(),
                    to,
                    at,
                });
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        // `name` is None for a glob; `bound` is the name the leaf brings in.
        let leaf = |w: &mut Self,
                    prefix: &[String],
                    name: Option<&syn::Ident>,
                    bound: Option<&syn::Ident>,
                    span: Span| {
            let mut segs = prefix.to_vec();
            segs.extend(name.filter(|n| *n != "self").map(|n| n.to_string()));
            if !w.collecting_aliases {
                return w.record(&segs, span, true);
            }
            let bound = match bound {
                Some(n) if n == "self" => prefix.last().cloned(),
                n => n.map(|n| n.to_string()),
            };
            if let (Some(bound), Some((m, true))) = (bound, w.resolve(&segs, true)) {
                w.aliases.insert((w.here().to_string(), bound), m);
            }
        };
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                leaf(self, prefix, Some(&n.ident), Some(&n.ident), n.ident.span())
            }
            syn::UseTree::Rename(r) => leaf(
                self,
                prefix,
                Some(&r.ident),
                Some(&r.rename),
                r.ident.span(),
            ),
            syn::UseTree::Glob(g) => leaf(self, prefix, None, None, g.star_token.span),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        if !is_test(item_attrs(i)) {
            visit::visit_item(self, i);
        }
    }

    fn visit_impl_item(&mut self, i: &'ast syn::ImplItem) {
        let attrs = match i {
            syn::ImplItem::Const(x) => &x.attrs,
            syn::ImplItem::Fn(x) => &x.attrs,
            syn::ImplItem::Type(x) => &x.attrs,
            syn::ImplItem::Macro(x) => &x.attrs,
            _ => return visit::visit_impl_item(self, i),
        };
        if !is_test(attrs) {
            visit::visit_impl_item(self, i);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // `mod child;` is not an edge; an inline module is part of this file.
        if let Some((_, items)) = &m.content {
            self.lexical.push(child(self.here(), &m.ident.to_string()));
            items.iter().for_each(|i| self.visit_item(i));
            self.lexical.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if !self.collecting_aliases && p.leading_colon.is_none() {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.record(&segs, p.segments[0].ident.span(), false);
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if !self.collecting_aliases {
            let mut found = Vec::new();
            macro_paths(m.tokens.clone(), &mut found);
            for (segs, span) in found {
                self.record(&segs, span, false);
            }
        }
        visit::visit_macro(self, m);
    }
}

/// Paths `a::b::c` written in a macro's arguments (syn does not parse them).
fn macro_paths(tokens: TokenStream, out: &mut Vec<(Vec<String>, Span)>) {
    let t: Vec<TokenTree> = tokens.into_iter().collect();
    let colons = |j: usize| {
        matches!((t.get(j), t.get(j + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
    };
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            TokenTree::Group(g) => macro_paths(g.stream(), out),
            TokenTree::Ident(id) if !(i >= 2 && colons(i - 2)) => {
                let mut segs = vec![id.to_string()];
                while colons(i + 1) {
                    let Some(TokenTree::Ident(next)) = t.get(i + 3) else {
                        break;
                    };
                    segs.push(next.to_string());
                    i += 3;
                }
                if segs.len() > 1 {
                    out.push((segs, id.span()));
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Every module-to-module edge of one crate, at most one per pair (the first
/// found), in module order.
pub fn edges(krate: &str, files: &[Source]) -> Vec<Edge> {
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut found: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for source in files {
        let ast = syn::parse_file(&source.text).unwrap_or_else(|e| panic!("{}: {e}", source.file));
        let root = if source.module == "main" || source.module.starts_with("main::") {
            "main"
        } else {
            "crate"
        };
        let mut w = Walker {
            krate,
            modules: &modules,
            source,
            root,
            lexical: Vec::new(),
            aliases: HashMap::new(),
            edges: Vec::new(),
            collecting_aliases: true,
        };
        // Aliases may build on aliases (`use crate::hub; use hub::outbox;`).
        for _ in 0..3 {
            w.visit_file(&ast);
        }
        w.collecting_aliases = false;
        w.visit_file(&ast);
        for e in w.edges {
            found.entry((e.from.clone(), e.to.clone())).or_insert(e);
        }
    }
    found.into_values().collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn tangles(nodes: &BTreeSet<String>, out: &BTreeMap<&str, Vec<&str>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        out: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: HashMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        groups: Vec<BTreeSet<String>>,
    }
    fn connect<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, (n, n));
        t.stack.push(v);
        for &w in t.out.get(v).into_iter().flatten() {
            let low = match t.index.get(w) {
                None => {
                    connect(t, w);
                    t.index[w].1
                }
                Some(&(i, _)) if t.stack.contains(&w) => i,
                Some(_) => continue,
            };
            let e = t.index.get_mut(v).expect("visited");
            e.1 = e.1.min(low);
        }
        if t.index[v].0 == t.index[v].1 {
            let at = t.stack.iter().rposition(|&x| x == v).expect("on stack");
            let group: BTreeSet<String> = t.stack.drain(at..).map(String::from).collect();
            if group.len() > 1 {
                t.groups.push(group);
            }
        }
    }
    let mut t = T {
        out,
        index: HashMap::new(),
        stack: Vec::new(),
        groups: Vec::new(),
    };
    for v in nodes {
        if !t.index.contains_key(v.as_str()) {
            connect(&mut t, v);
        }
    }
    t.groups.sort();
    t.groups
}

/// The groups of modules that reach each other, and for every edge inside a
/// group the shortest cycle through it (duplicates removed).
pub fn cycles(krate: &str, files: &[Source]) -> (Vec<BTreeSet<String>>, Vec<Cycle>) {
    let edges = edges(krate, files);
    let nodes: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let by_pair: HashMap<(&str, &str), &Edge> =
        edges.iter().map(|e| ((&*e.from, &*e.to), e)).collect();
    for e in &edges {
        out.entry(&e.from).or_default().push(&e.to);
    }
    let groups = tangles(&nodes, &out);
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for g in &groups {
        for e in edges
            .iter()
            .filter(|e| g.contains(&e.from) && g.contains(&e.to))
        {
            // Breadth-first from e.to back to e.from, inside the group.
            let mut prev: HashMap<&str, &str> = HashMap::new();
            let mut queue = VecDeque::from([e.to.as_str()]);
            while let Some(v) = queue.pop_front() {
                for &w in out.get(v).into_iter().flatten() {
                    if g.contains(w) && w != e.to && !prev.contains_key(w) {
                        prev.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let mut path = vec![e.from.as_str()];
            while *path.last().expect("non-empty") != e.to {
                path.push(prev[path.last().expect("non-empty")]);
            }
            path.reverse(); // e.to .. e.from
            path.insert(0, &e.from);
            let start = (0..path.len() - 1)
                .min_by_key(|&i| path[i])
                .expect("non-empty");
            let ring: Vec<&str> = path[start..path.len() - 1]
                .iter()
                .chain(&path[..start])
                .copied()
                .collect();
            if seen.insert(ring.clone()) {
                let chain = (0..ring.len())
                    .map(|i| by_pair[&(ring[i], ring[(i + 1) % ring.len()])].clone());
                found.push(Cycle(chain.collect()));
            }
        }
    }
    found.sort_by_key(|c| (c.0.len(), c.chain()));
    (groups, found)
}

/// The crate's files, found from `lib.rs` / `main.rs` through `mod` items.
pub fn load(src: &Path) -> Vec<Source> {
    let rel = |p: &Path| {
        p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let mut roots = vec![(src.join("lib.rs"), "crate".to_string())];
    let main = if src.join("lib.rs").exists() {
        "main"
    } else {
        "crate"
    };
    roots.push((src.join("main.rs"), main.to_string()));
    let mut todo: Vec<(PathBuf, String)> = roots.into_iter().filter(|(p, _)| p.exists()).collect();
    let mut files = Vec::new();
    while let Some((path, module)) = todo.pop() {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let dir = if ["lib", "main", "mod"].contains(&stem) {
            path.with_file_name("")
        } else {
            path.with_extension("")
        };
        let mut stack = vec![(ast.items.iter().collect::<Vec<_>>(), dir, module.clone())];
        while let Some((items, dir, m)) = stack.pop() {
            for item in items {
                let syn::Item::Mod(md) = item else { continue };
                if is_test(&md.attrs) {
                    continue;
                }
                let (name, sub) = (md.ident.to_string(), child(&m, &md.ident.to_string()));
                match &md.content {
                    Some((_, inner)) => stack.push((inner.iter().collect(), dir.join(&name), sub)),
                    None => {
                        let flat = dir.join(format!("{name}.rs"));
                        todo.push((
                            if flat.exists() {
                                flat
                            } else {
                                dir.join(&name).join("mod.rs")
                            },
                            sub,
                        ));
                    }
                }
            }
        }
        files.push(Source {
            module,
            file: rel(&path),
            text,
        });
    }
    files.sort_by(|a, b| a.module.cmp(&b.module));
    files
}

/// `[package] name` of the Cargo.toml next to `src`, as a path segment.
fn crate_name(src: &Path) -> String {
    let toml =
        std::fs::read_to_string(src.with_file_name("Cargo.toml")).expect("Cargo.toml next to src");
    let package = toml.split("[package]").nth(1).expect("[package]");
    let line = package
        .lines()
        .find(|l| l.trim_start().starts_with("name"))
        .expect("package name");
    line.split('"')
        .nth(1)
        .expect("quoted name")
        .replace('-', "_")
}

fn check_tree(dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    if !src.exists() {
        eprintln!("{dir} does not exist; nothing to check");
        return;
    }
    let krate = crate_name(&src);
    let files = load(&src);
    let edges = edges(&krate, &files);
    assert!(
        files.len() > 1 && !edges.is_empty(),
        "{dir}: found {} modules and {} edges",
        files.len(),
        edges.len()
    );
    let (groups, cycles) = cycles(&krate, &files);
    if cycles.is_empty() {
        return;
    }
    let mut msg = format!(
        "{dir}: {} import cycle(s) in {} group(s); no module may import one that imports it back\n",
        cycles.len(),
        groups.len()
    );
    for g in &groups {
        msg += &format!("\ngroup of {} modules; its edges:\n", g.len());
        for m in g {
            let to: Vec<&str> = edges
                .iter()
                .filter(|e| &e.from == m && g.contains(&e.to))
                .map(|e| &*e.to)
                .collect();
            msg += &format!("  {m} -> [{}]\n", to.join(", "));
        }
    }
    msg += "\ncycles (one per edge of a group, shortest first):\n";
    for c in &cycles {
        msg += &c.to_string();
    }
    panic!("{msg}");
}

#[test]
fn server_has_no_import_cycles() {
    check_tree("src");
}

#[test]
fn loadtest_has_no_import_cycles() {
    check_tree("loadtest/src");
}

#[test]
fn simulator_has_no_import_cycles() {
    check_tree("simulate/src");
}

/// The core on small made-up crates (`pulsehub`, files named after modules).
mod synthetic {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> Vec<Source> {
        let f = |&(m, t): &(&str, &str)| Source {
            module: m.into(),
            file: format!("{m}.rs"),
            text: t.into(),
        };
        files.iter().map(f).collect()
    }

    fn chains(files: &[(&str, &str)]) -> Vec<String> {
        cycles("pulsehub", &crate_of(files))
            .1
            .iter()
            .map(Cycle::chain)
            .collect()
    }

    fn pairs(files: &[(&str, &str)]) -> Vec<String> {
        edges("pulsehub", &crate_of(files))
            .iter()
            .map(|e| format!("{} -> {}", e.from, e.to))
            .collect()
    }

    const ROOT: (&str, &str) = ("crate", "pub mod a; pub mod b; pub mod c;");
    const B: (&str, &str) = ("b", "pub struct Y; pub fn g() {}");

    #[test]
    fn one_way_dependencies_pass() {
        let a = (
            "a",
            "use crate::b::Y; pub struct X; fn f() { crate::b::g() }",
        );
        assert_eq!(pairs(&[ROOT, a, B]), ["a -> b"]);
        assert!(chains(&[ROOT, a, B]).is_empty());
    }

    #[test]
    fn a_back_import_fails_with_the_chain_and_its_lines() {
        let a = ("a", "use crate::b::Y;\npub struct X;");
        let b = ("b", "pub struct Y;\n\nfn f(_: crate::a::X) {}");
        let (_, found) = cycles("pulsehub", &crate_of(&[ROOT, a, b]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].chain(), "a -> b -> a");
        let text = found[0].to_string();
        assert!(text.contains("a -> b  at a.rs:1 `crate::b::Y`"), "{text}");
        assert!(text.contains("b -> a  at b.rs:3 `crate::a::X`"), "{text}");
    }

    #[test]
    fn a_longer_circle_is_one_chain() {
        let a = ("a", "use crate::b::Y;");
        let b = ("b", "use super::c::Z;");
        let c = ("c", "pub struct Z; fn f() -> pulsehub::a::X { todo!() }");
        assert_eq!(chains(&[ROOT, a, b, c]), ["a -> b -> c -> a"]);
    }

    #[test]
    fn a_super_back_edge_fails() {
        let hub = (
            "hub",
            "pub mod outbox;\npub struct Frames;\nfn f() { outbox::Outbox::new(); }",
        );
        let outbox = (
            "hub::outbox",
            "pub struct Outbox;\nfn g(_: super::Frames) {}",
        );
        assert_eq!(
            chains(&[("crate", "pub mod hub;"), hub, outbox]),
            ["hub -> hub::outbox -> hub"]
        );
        // The parent alone using its child is fine.
        let quiet = ("hub::outbox", "pub struct Outbox;");
        assert!(chains(&[("crate", "pub mod hub;"), hub, quiet]).is_empty());
    }

    #[test]
    fn cfg_test_imports_are_ignored() {
        let a = ("a", "use crate::b::Y;");
        let b = (
            "b",
            "pub struct Y;
            #[cfg(test)] mod tests { use crate::a::X; }
            #[cfg(test)] fn helper() { crate::a::f(); }
            impl Y { #[cfg(test)] fn t() { crate::a::f() } }
            #[test] fn t() { crate::a::f() }",
        );
        assert!(chains(&[ROOT, a, b]).is_empty());
        assert_eq!(pairs(&[ROOT, a, b]), ["a -> b"]);
    }

    #[test]
    fn a_use_group_gives_one_edge_per_module() {
        let c = (
            "c",
            "use crate::{a::X, b::Y}; use super::b::{self as bee, *};",
        );
        assert_eq!(pairs(&[ROOT, ("a", ""), B, c]), ["c -> a", "c -> b"]);
    }

    #[test]
    fn macro_arguments_and_module_aliases_count() {
        let a = ("a", "use crate::hub; fn f() { hub::outbox::g(); }");
        let b = ("b", r#"fn f() { println!("{}", crate::c::NAME); }"#);
        let files = [
            ("crate", "pub mod a; pub mod b; pub mod c; pub mod hub;"),
            a,
            b,
            ("c", ""),
            ("hub", "pub mod outbox;"),
            ("hub::outbox", ""),
        ];
        assert_eq!(pairs(&files), ["a -> hub", "a -> hub::outbox", "b -> c"]);
    }

    #[test]
    fn mod_declarations_are_not_edges_but_reexports_are() {
        let a = ("a", "pub struct X; fn f() -> crate::Top { crate::Top }");
        assert!(chains(&[("crate", "pub mod a; pub struct Top;"), a]).is_empty());
        assert_eq!(
            chains(&[("crate", "pub mod a; pub use a::X; pub struct Top;"), a]),
            ["a -> crate -> a"]
        );
    }

    #[test]
    fn the_binary_may_use_everything() {
        let main = ("main", "use pulsehub::a::X; fn main() { pulsehub::b::g() }");
        let a = ("a", "use crate::b::Y; pub struct X;");
        assert_eq!(
            pairs(&[ROOT, a, B, main]),
            ["a -> b", "main -> a", "main -> b"]
        );
        assert!(chains(&[ROOT, a, B, main]).is_empty());
    }
}
