//! The architecture page (docs/architecture.md) is the one a newcomer trusts: its graph of
//! the crates must draw exactly the dependencies their manifests declare, no more and no
//! fewer.

use std::{collections::BTreeSet, path::Path};

/// Each hookflow crate's `[dependencies]` on another hookflow crate, as (from, to).
fn declared() -> BTreeSet<(String, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut arrows = BTreeSet::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let manifest: toml::Table = text.parse().expect("a Cargo.toml");
        let name = manifest["package"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let dependencies = manifest.get("dependencies").and_then(|d| d.as_table());
        for dependency in dependencies.into_iter().flat_map(|d| d.keys()) {
            if dependency.starts_with("hookflow") {
                arrows.insert((name.clone(), dependency.clone()));
            }
        }
    }
    arrows
}

/// The arrows of the page's mermaid graph (`a --> b`).
fn drawn() -> BTreeSet<(String, String)> {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let text = std::fs::read_to_string(page).expect("docs/architecture.md");
    let graph = text
        .split("```mermaid")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid graph on the page");
    graph
        .lines()
        .filter_map(|line| line.split_once("-->"))
        .map(|(from, to)| (from.trim().to_owned(), to.trim().to_owned()))
        .collect()
}

#[test]
fn the_architecture_page_draws_every_crate_dependency_and_no_other() {
    let declared = declared();
    let drawn = drawn();
    assert!(
        declared.len() >= 10,
        "the manifests were read: {declared:?}"
    );
    let undrawn: Vec<_> = declared.difference(&drawn).collect();
    let unreal: Vec<_> = drawn.difference(&declared).collect();
    assert!(
        undrawn.is_empty() && unreal.is_empty(),
        "docs/architecture.md does not draw {undrawn:?} and draws {unreal:?}, which no \
         manifest declares"
    );
}
