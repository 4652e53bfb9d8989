//! The dependency graph algorithms shared by validation (cycles) and planning (layers).
//! Nodes are names; `deps[a]` lists what `a` needs first. Iteration is in name order so
//! that every answer is deterministic.

use std::collections::{BTreeMap, BTreeSet};

/// Finds one cycle, as the list of nodes along it starting at its smallest name
/// (`[a, b, c]` means `a -> b -> c -> a`). Edges to unknown nodes are ignored.
pub(crate) fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = deps.keys().map(|k| (k.as_str(), Mark::New)).collect();
    for start in deps.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        // Iterative DFS: each frame is a node and the iterator over its remaining edges.
        let mut path: Vec<&str> = vec![start];
        let mut stack = vec![deps[start].iter()];
        marks.insert(start, Mark::OnPath);
        while let Some(edges) = stack.last_mut() {
            match edges.next() {
                Some(next) => match marks.get(next.as_str()).copied() {
                    Some(Mark::New) => {
                        marks.insert(next, Mark::OnPath);
                        path.push(next);
                        stack.push(deps[next].iter());
                    }
                    Some(Mark::OnPath) => {
                        let from = path.iter().position(|n| n == next).expect("on path");
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|s| s.to_string()).collect();
                        let min = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
                        cycle.rotate_left(min);
                        return Some(cycle);
                    }
                    Some(Mark::Done) | None => {}
                },
                None => {
                    stack.pop();
                    let done = path.pop().expect("frame has a node");
                    marks.insert(done, Mark::Done);
                }
            }
        }
    }
    None
}

/// Topological layers: layer 0 needs nothing, layer k needs only nodes of earlier layers and
/// at least one of layer k-1. Names are sorted within a layer. Panics on a cycle, which
/// validation rejects first.
pub(crate) fn layers(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut layers: Vec<Vec<String>> = Vec::new();
    while placed.len() < deps.len() {
        let layer: Vec<String> = deps
            .iter()
            .filter(|(n, _)| !placed.contains_key(n.as_str()))
            .filter(|(_, needs)| {
                needs
                    .iter()
                    .all(|d| placed.contains_key(d.as_str()) || !deps.contains_key(d))
            })
            .map(|(n, _)| n.clone())
            .collect();
        assert!(!layer.is_empty(), "dependency cycle among {deps:?}");
        for n in &layer {
            let name = deps.get_key_value(n).expect("known node").0.as_str();
            placed.insert(name, layers.len());
        }
        layers.push(layer);
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn no_cycle_in_a_dag() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        assert_eq!(find_cycle(&g), None);
    }

    #[test]
    fn cycle_starts_at_its_smallest_name() {
        let g = graph(&[("x", &["c"]), ("c", &["a"]), ("a", &["b"]), ("b", &["c"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c"]);
        let self_loop = graph(&[("a", &["a"])]);
        assert_eq!(find_cycle(&self_loop).unwrap(), ["a"]);
    }

    #[test]
    fn layers_put_independent_nodes_together() {
        let g = graph(&[
            ("app", &["db"]),
            ("web", &["db", "cache"]),
            ("lb", &["app"]),
            ("db", &[]),
            ("cache", &[]),
        ]);
        assert_eq!(
            layers(&g),
            vec![vec!["cache", "db"], vec!["app", "web"], vec!["lb"]]
        );
    }
}
