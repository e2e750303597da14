//! `update-alternatives` without running postinst scripts.
//!
//! Debian packages register alternatives in their postinst:
//!
//! ```sh
//! update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \
//!     --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz
//! ```
//!
//! jeos scans each postinst for such invocations (line continuations and quotes handled
//! like a shell; a word that needs variable expansion or command substitution makes the
//! invocation unknowable and it is skipped with a note), then picks, per name, the
//! candidate with the highest priority whose target exists in the image (ties: the
//! lexically smallest path, for determinism), which is what dpkg's automatic mode does.
//! The result is `/etc/alternatives/<name> -> <path>` and `<link> ->
//! /etc/alternatives/<name>`, slaves likewise when their target exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::staging::FsOp;
use super::tree::{EntryKind, Tree};
use super::words::{Word, split_words};

/// One `--slave link name path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slave {
    /// The generic link, e.g. `/usr/share/man/man1/awk.1.gz`.
    pub link: String,
    /// Its alternative name.
    pub name: String,
    /// The concrete file.
    pub path: String,
}

/// One `--install` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternativeCandidate {
    /// The package whose postinst registers it.
    pub package: String,
    /// The generic link, e.g. `/usr/bin/awk`.
    pub link: String,
    /// The alternative name, e.g. `awk`.
    pub name: String,
    /// The concrete file, e.g. `/usr/bin/mawk`.
    pub path: String,
    /// Priority.
    pub priority: i64,
    /// Slave links.
    pub slaves: Vec<Slave>,
}

/// Candidates found in the scripts plus notes about invocations that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlternativesScan {
    /// Every readable `--install`.
    pub candidates: Vec<AlternativeCandidate>,
    /// Skipped invocations.
    pub notes: Vec<String>,
}

/// The chosen alternatives and the links they need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlternativesPlan {
    /// Chosen name -> path (master and slaves), sorted.
    pub selected: BTreeMap<String, String>,
    /// Operations creating the links.
    pub ops: Vec<FsOp>,
    /// Names without an installed candidate, skipped slaves and links blocked by files.
    pub notes: Vec<String>,
}

/// Joins `\`-newline continuations, then splits the script into simple commands (a new
/// command starts after a newline or a control operator).
fn commands(script: &str) -> Vec<Result<Vec<Word>, usize>> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start_line = 1;
    for (index, line) in script.lines().enumerate() {
        if logical.is_empty() {
            start_line = index + 1;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        if !logical.contains("update-alternatives") {
            logical.clear();
            continue;
        }
        match split_words(&logical, true) {
            Ok(words) => {
                let mut current = Vec::new();
                for word in words {
                    if word.operator {
                        out.push(Ok(std::mem::take(&mut current)));
                    } else {
                        current.push(word);
                    }
                }
                out.push(Ok(current));
            }
            // Quotes spanning lines (rare in postinsts): not a command we can read.
            Err(_) => out.push(Err(start_line)),
        }
        logical.clear();
    }
    out
}

/// Finds `update-alternatives --install` invocations in one package's postinst.
pub fn scan_postinst(package: &str, script: &str, scan: &mut AlternativesScan) {
    for command in commands(script) {
        let words = match command {
            Ok(words) => words,
            Err(line) => {
                scan.notes.push(format!(
                    "{package}: postinst line {line}: unbalanced quotes; skipped"
                ));
                continue;
            }
        };
        let Some(start) = words.iter().position(|w| {
            w.text == "update-alternatives" || w.text.ends_with("/update-alternatives")
        }) else {
            continue;
        };
        let args = &words[start + 1..];
        let Some(install) = args.iter().position(|w| w.text == "--install") else {
            continue;
        };
        let args = &args[install + 1..];
        if args.iter().any(|w| w.expands) {
            let shown: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
            scan.notes.push(format!(
                "{package}: `update-alternatives --install {}` uses shell variables; skipped",
                shown.join(" ")
            ));
            continue;
        }
        let [link, name, path, priority, rest @ ..] = args else {
            scan.notes.push(format!(
                "{package}: `update-alternatives --install` with too few arguments; skipped"
            ));
            continue;
        };
        let Ok(priority) = priority.text.parse::<i64>() else {
            scan.notes.push(format!(
                "{package}: alternative `{}` has priority `{}`; skipped",
                name.text, priority.text
            ));
            continue;
        };
        let mut slaves = Vec::new();
        let mut rest = rest;
        while let [flag, tail @ ..] = rest {
            if (flag.text == "--slave" || flag.text == "--follower")
                && let [l, n, p, tail @ ..] = tail
            {
                slaves.push(Slave {
                    link: l.text.clone(),
                    name: n.text.clone(),
                    path: p.text.clone(),
                });
                rest = tail;
                continue;
            }
            // Anything else (redirections, `|| true` already split off) ends the arguments.
            break;
        }
        scan.candidates.push(AlternativeCandidate {
            package: package.to_owned(),
            link: link.text.clone(),
            name: name.text.clone(),
            path: path.text.clone(),
            priority,
            slaves,
        });
    }
}

/// Scans every `(package, postinst text)`.
pub fn scan_postinsts(scripts: &[(String, String)]) -> AlternativesScan {
    let mut scan = AlternativesScan::default();
    for (package, script) in scripts {
        scan_postinst(package, script, &mut scan);
    }
    scan
}

fn installed(tree: &Tree, path: &str) -> bool {
    tree.lookup(Path::new(path)).is_ok()
}

fn link_ops(
    tree: &Tree,
    link: &str,
    name: &str,
    path: &str,
    ops: &mut Vec<FsOp>,
    notes: &mut Vec<String>,
) {
    let alternative = format!("/etc/alternatives/{name}");
    // update-alternatives refuses to replace a real file at the generic link.
    if let Ok(resolved) = tree.resolve(Path::new(link), false)
        && let Some(entry) = tree.get(&resolved.path)
        && !matches!(entry.kind, EntryKind::Symlink { .. })
    {
        notes.push(format!(
            "alternative `{name}`: `{link}` is not a symlink; left alone"
        ));
        return;
    }
    ops.push(FsOp::Symlink {
        path: Path::new("etc/alternatives").join(name),
        target: PathBuf::from(path),
    });
    if let Some(parent) = Path::new(link).parent() {
        ops.push(FsOp::CreateDir {
            path: parent.to_path_buf(),
            own: super::tree::Ownership::root(0o755),
            update: false,
        });
    }
    ops.push(FsOp::Symlink {
        path: PathBuf::from(link),
        target: PathBuf::from(alternative),
    });
}

/// Chooses one candidate per name and plans the links.
pub fn plan_alternatives(scan: &AlternativesScan, tree: &Tree) -> AlternativesPlan {
    let mut plan = AlternativesPlan {
        notes: scan.notes.clone(),
        ..AlternativesPlan::default()
    };
    let mut by_name: BTreeMap<&str, Vec<&AlternativeCandidate>> = BTreeMap::new();
    for candidate in &scan.candidates {
        by_name.entry(&candidate.name).or_default().push(candidate);
    }
    let mut ops = vec![FsOp::CreateDir {
        path: "etc/alternatives".into(),
        own: super::tree::Ownership::root(0o755),
        update: false,
    }];
    for (name, candidates) in by_name {
        let best = candidates
            .iter()
            .filter(|c| installed(tree, &c.path))
            .max_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then_with(|| b.path.cmp(&a.path))
            });
        let Some(best) = best else {
            plan.notes
                .push(format!("alternative `{name}`: no candidate is installed"));
            continue;
        };
        plan.selected.insert(name.to_owned(), best.path.clone());
        link_ops(
            tree,
            &best.link,
            name,
            &best.path,
            &mut ops,
            &mut plan.notes,
        );
        for slave in &best.slaves {
            if installed(tree, &slave.path) {
                plan.selected.insert(slave.name.clone(), slave.path.clone());
                link_ops(
                    tree,
                    &slave.link,
                    &slave.name,
                    &slave.path,
                    &mut ops,
                    &mut plan.notes,
                );
            }
        }
    }
    plan.ops = ops;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Ownership;

    const MAWK: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    update-alternatives --quiet --install /usr/bin/awk awk /usr/bin/mawk 5 \
        --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \
        --slave /usr/bin/nawk nawk /usr/bin/mawk
fi
"#;

    fn tree() -> Tree {
        let mut t = Tree::new(0);
        for d in ["usr", "usr/bin", "etc"] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        for f in ["usr/bin/mawk", "usr/bin/gawk", "usr/bin/vim.tiny"] {
            t.add_file(Path::new(f), 1, Ownership::root(0o755), 0)
                .unwrap();
        }
        t.add_file(Path::new("usr/bin/editor"), 1, Ownership::root(0o755), 0)
            .unwrap();
        t
    }

    #[test]
    fn scans_continuations_quotes_and_slaves() {
        let mut scan = AlternativesScan::default();
        scan_postinst("mawk", MAWK, &mut scan);
        assert_eq!(scan.candidates.len(), 1);
        let c = &scan.candidates[0];
        assert_eq!(
            (
                c.link.as_str(),
                c.name.as_str(),
                c.path.as_str(),
                c.priority
            ),
            ("/usr/bin/awk", "awk", "/usr/bin/mawk", 5)
        );
        assert_eq!(c.slaves.len(), 2);
        assert_eq!(
            c.slaves[1],
            Slave {
                link: "/usr/bin/nawk".into(),
                name: "nawk".into(),
                path: "/usr/bin/mawk".into()
            }
        );
    }

    #[test]
    fn variables_are_noted_and_skipped() {
        let mut scan = AlternativesScan::default();
        scan_postinst(
            "p",
            "update-alternatives --install /usr/bin/x x \"$BIN\" 10 || true\n",
            &mut scan,
        );
        scan_postinst(
            "q",
            "update-alternatives --install /usr/bin/y y '/usr/bin/y1' 10 || true; echo done\n",
            &mut scan,
        );
        scan_postinst(
            "r",
            "update-alternatives --install /usr/bin/z z /usr/bin/z1 high\n",
            &mut scan,
        );
        scan_postinst(
            "s",
            "update-alternatives --remove x /usr/bin/x1\n",
            &mut scan,
        );
        assert_eq!(scan.candidates.len(), 1);
        assert_eq!(scan.candidates[0].path, "/usr/bin/y1");
        assert_eq!(scan.notes.len(), 2, "{:?}", scan.notes);
    }

    #[test]
    fn highest_installed_priority_wins() {
        let scripts = vec![
            ("mawk".to_owned(), MAWK.to_owned()),
            (
                "gawk".to_owned(),
                "update-alternatives --install /usr/bin/awk awk /usr/bin/gawk 10\n".to_owned(),
            ),
            (
                "original-awk".to_owned(),
                "update-alternatives --install /usr/bin/awk awk /usr/bin/oawk 50\n".to_owned(),
            ),
            (
                "nano".to_owned(),
                "update-alternatives --install /usr/bin/pico pico /usr/bin/nano 40\n".to_owned(),
            ),
        ];
        let plan = plan_alternatives(&scan_postinsts(&scripts), &tree());
        assert_eq!(
            plan.selected.get("awk").map(String::as_str),
            Some("/usr/bin/gawk")
        );
        // gawk has no slaves, so mawk's nawk is not selected.
        assert!(!plan.selected.contains_key("nawk"));
        assert!(plan.ops.contains(&FsOp::Symlink {
            path: "etc/alternatives/awk".into(),
            target: "/usr/bin/gawk".into()
        }));
        assert!(plan.ops.contains(&FsOp::Symlink {
            path: "/usr/bin/awk".into(),
            target: "/etc/alternatives/awk".into()
        }));
        assert!(plan.notes.iter().any(|n| n.contains("`pico`")));
    }

    #[test]
    fn slaves_need_their_target_and_files_are_not_replaced() {
        let scripts = vec![
            ("mawk".to_owned(), MAWK.to_owned()),
            (
                "vim".to_owned(),
                "update-alternatives --install /usr/bin/editor editor /usr/bin/vim.tiny 15\n"
                    .to_owned(),
            ),
        ];
        let plan = plan_alternatives(&scan_postinsts(&scripts), &tree());
        assert_eq!(
            plan.selected.get("nawk").map(String::as_str),
            Some("/usr/bin/mawk")
        );
        assert!(!plan.selected.contains_key("awk.1.gz"));
        assert!(!plan.ops.iter().any(
            |o| matches!(o, FsOp::Symlink { path, .. } if path == Path::new("/usr/bin/editor"))
        ));
        assert!(plan.notes.iter().any(|n| n.contains("not a symlink")));
    }
}
