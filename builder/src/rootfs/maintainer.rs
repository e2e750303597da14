//! What the skipped maintainer scripts would have done, recognised at build time.
//!
//! jeos never runs `preinst`/`postinst`. This module reads them (as words, like a shell,
//! without executing anything) for the effects an appliance needs:
//!
//! | command | what the build does |
//! |---|---|
//! | `adduser --system`, `useradd --system`, `addgroup --system`, `groupadd --system`, `adduser USER GROUP` | the account is created (after the packages' `sysusers.d`, so declared ids win), with a note; a name only known at run time gets a note asking for `[[system.user]]` |
//! | `ucf SRC DEST`, `cp SRC DEST` into `/etc` | when `DEST` is missing: copied from `SRC`, or from the package's template of the same name under `/usr/share` when `SRC` is a temporary file, with a note (the script may have edited it) |
//! | `dpkg-statoverride --add USER GROUP MODE PATH` | the owner and mode are set |
//! | `systemd-sysusers`, `systemd-tmpfiles` | nothing more: their files are applied by the `sysusers` and `tmpfiles` steps; a file outside the standard directories gets a note |
//! | `update-alternatives` | see [`super::alternatives`] |
//! | `> /etc/...` (files written from debconf answers) | a note naming the package and the file when the image lacks it |
//!
//! Shell variables assigned a literal value in the same script (`CONF=/etc/x.conf`) are
//! substituted; any other expansion makes a word unknowable. Everything is pure: the plan
//! is applied by the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::accounts::{Accounts, NOLOGIN};
use super::staging::FsOp;
use super::sysusers::{IdSpec, Located, SysusersLine};
use super::tree::{Ownership, Tree};
use super::words::split_words;

/// One maintainer script of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Package name.
    pub package: String,
    /// `preinst`, `postinst`, ...
    pub kind: String,
    /// The script text.
    pub text: String,
}

/// Filesystem changes and notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintainerPlan {
    /// Changes to the image.
    pub ops: Vec<FsOp>,
    /// For the build report.
    pub notes: Vec<String>,
}

/// A simple command: its first line and its words (`None` for a word only known at run
/// time).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    line: usize,
    words: Vec<Option<String>>,
}

/// Keywords that may precede a command on the same line.
const PREFIXES: &[&str] = &[
    "if", "then", "else", "elif", "do", "!", "{", "while", "until",
];

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let name = text
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .or_else(|| text.strip_prefix('$'))?;
    vars.get(name).cloned()
}

/// Splits a script into simple commands, substituting literal variable assignments.
/// `words` without shell redirections (`>/dev/null`, `2>&1`, `> file`): the arguments.
fn without_redirections(words: &[Option<String>]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut target_next = false;
    for word in words {
        if std::mem::take(&mut target_next) {
            continue;
        }
        if let Some(target) = word.as_deref().and_then(redirection) {
            target_next = target.is_empty();
            continue;
        }
        out.push(word.clone());
    }
    out
}

/// The target of a shell redirection word (`>/dev/null` -> `/dev/null`, `2>&1` -> `&1`,
/// `>` -> empty: the target is the next word); `None` for an ordinary word.
fn redirection(word: &str) -> Option<&str> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix('&').unwrap_or(rest);
    let rest = rest
        .strip_prefix(">>")
        .or_else(|| rest.strip_prefix('>'))
        .or_else(|| rest.strip_prefix('<'))?;
    Some(rest.strip_prefix('|').unwrap_or(rest))
}

fn commands(script: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut logical = String::new();
    let mut start = 1;
    for (index, line) in script.lines().enumerate() {
        if logical.is_empty() {
            start = index + 1;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let Ok(words) = split_words(&logical, true) else {
            logical.clear();
            continue;
        };
        logical.clear();
        let mut current: Vec<Option<String>> = Vec::new();
        let mut push = |current: &mut Vec<Option<String>>| {
            if !current.is_empty() {
                out.push(Command {
                    line: start,
                    words: std::mem::take(current),
                });
            }
        };
        for word in words {
            if word.operator {
                push(&mut current);
                continue;
            }
            if current.is_empty() && PREFIXES.contains(&word.text.as_str()) {
                continue;
            }
            if current.is_empty()
                && let Some((name, value)) = word.text.split_once('=')
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                if word.expands {
                    vars.remove(name);
                } else {
                    vars.insert(name.to_owned(), value.to_owned());
                }
                continue;
            }
            let value = if word.expands {
                substitute(&word.text, &vars)
            } else {
                Some(word.text)
            };
            current.push(value);
        }
        push(&mut current);
    }
    out
}

/// `adduser`/`useradd` option names that take a value.
const VALUE_OPTIONS: &[&str] = &[
    "--home",
    "--home-dir",
    "-d",
    "--shell",
    "-s",
    "--uid",
    "-u",
    "--gid",
    "-g",
    "--gecos",
    "--comment",
    "-c",
    "--ingroup",
    "--firstuid",
    "--lastuid",
    "--firstgid",
    "--lastgid",
    "--conf",
    "-G",
    "--groups",
    "-K",
    "--key",
    "-k",
    "--skel",
];

/// Options and positional words of an account command. Unknowable option values are
/// kept as `None`; an unknowable positional is `None` too.
fn options(words: &[Option<String>]) -> (BTreeMap<String, Option<String>>, Vec<Option<String>>) {
    let mut opts = BTreeMap::new();
    let mut positional = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        match word {
            Some(w) if w.starts_with('-') => {
                if let Some((name, value)) = w.split_once('=') {
                    opts.insert(name.to_owned(), Some(value.to_owned()));
                } else if VALUE_OPTIONS.contains(&w.as_str()) {
                    opts.insert(w.clone(), iter.next().cloned().flatten());
                } else {
                    opts.insert(w.clone(), None);
                }
            }
            // `$quiet` and the like: most likely an option; ignore it.
            None => {}
            other => positional.push(other.clone()),
        }
    }
    (opts, positional)
}

fn opt<'a>(opts: &'a BTreeMap<String, Option<String>>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| opts.get(*n).and_then(|v| v.as_deref()))
}

fn located(script: &Script, line: usize, value: SysusersLine) -> Located<SysusersLine> {
    Located {
        file: PathBuf::from(format!("{} {}", script.package, script.kind)),
        line,
        value,
    }
}

/// The accounts an `adduser`/`useradd`/`addgroup`/`groupadd` command creates.
fn account_lines(script: &Script, command: &Command) -> Result<Vec<SysusersLine>, String> {
    let program = command.words[0].as_deref().unwrap_or_default();
    let program = program.rsplit('/').next().unwrap_or_default();
    let (opts, positional) = options(&command.words[1..]);
    let system = opts.contains_key("--system") || opts.contains_key("-r");
    let names: Vec<String> = positional.iter().flatten().cloned().collect();
    if names.len() != positional.len() || names.is_empty() {
        return Err(format!(
            "{} line {}: `{program}` names an account only known at run time",
            script.kind, command.line
        ));
    }
    let id = |names: &[&str]| match opt(&opts, names).and_then(|v| v.parse::<u32>().ok()) {
        Some(id) => IdSpec::Fixed(id),
        None => IdSpec::Auto,
    };
    let group_line = |name: &str, gid: IdSpec| SysusersLine::Group {
        name: name.to_owned(),
        id: gid,
    };
    Ok(match (program, names.as_slice()) {
        ("adduser", [user, group]) => vec![SysusersLine::Member {
            user: user.clone(),
            group: group.clone(),
        }],
        ("addgroup" | "groupadd", [group]) => vec![group_line(group, id(&["--gid", "-g"]))],
        ("adduser", [name]) if opts.contains_key("--group") && !system => {
            vec![group_line(name, IdSpec::Auto)]
        }
        ("adduser" | "useradd", [name]) => {
            if !system {
                return Err(format!(
                    "{} line {}: `{program} {name}` creates a regular account",
                    script.kind, command.line
                ));
            }
            let primary = opt(&opts, &["--ingroup", "--gid", "-g"]);
            let own_group = opts.contains_key("--group") || opts.contains_key("-U");
            let uid = opt(&opts, &["--uid", "-u"]).and_then(|v| v.parse::<u32>().ok());
            let id = match (primary, own_group) {
                (Some(group), _) => IdSpec::WithGroup(uid, group.to_owned()),
                (None, _) => uid.map_or(IdSpec::Auto, IdSpec::Fixed),
            };
            let home = opt(&opts, &["--home", "--home-dir", "-d"]).unwrap_or("/nonexistent");
            vec![SysusersLine::User {
                name: name.clone(),
                id,
                gecos: opt(&opts, &["--gecos", "--comment", "-c"])
                    .unwrap_or_default()
                    .to_owned(),
                home: home.to_owned(),
                shell: opt(&opts, &["--shell", "-s"]).unwrap_or(NOLOGIN).to_owned(),
                locked: false,
            }]
        }
        _ => {
            return Err(format!(
                "{} line {}: cannot read this `{program}` call",
                script.kind, command.line
            ));
        }
    })
}

/// Accounts the scripts create, as sysusers lines (for
/// [`super::sysusers::apply_sysusers`], which leaves existing names alone), plus notes
/// for the ones that cannot be read.
pub fn scan_accounts(scripts: &[Script]) -> (Vec<Located<SysusersLine>>, Vec<String>) {
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    for script in scripts
        .iter()
        .filter(|s| s.kind == "postinst" || s.kind == "preinst")
    {
        for command in commands(&script.text) {
            let Some(Some(program)) = command.words.first() else {
                continue;
            };
            let program = program.rsplit('/').next().unwrap_or_default();
            if !["adduser", "useradd", "addgroup", "groupadd"].contains(&program) {
                continue;
            }
            let command = Command {
                line: command.line,
                words: without_redirections(&command.words),
            };
            match account_lines(script, &command) {
                Ok(values) => lines.extend(
                    values
                        .into_iter()
                        .map(|v| located(script, command.line, v)),
                ),
                Err(why) => notes.push(format!(
                    "{}: {why}; declare it with `[[system.user]]` or `[[system.group]]` if the appliance needs it",
                    script.package
                )),
            }
        }
    }
    (lines, notes)
}

/// Describes the accounts `lines` add to `before` (for the build report).
pub fn account_notes(lines: &[Located<SysusersLine>], before: &Accounts) -> Vec<String> {
    let mut notes = Vec::new();
    let mut seen = BTreeSet::new();
    for l in lines {
        let (what, name) = match &l.value {
            SysusersLine::User { name, .. } if before.user(name).is_none() => ("user", name),
            SysusersLine::Group { name, .. } if before.group(name).is_none() => ("group", name),
            _ => continue,
        };
        if seen.insert((what, name.clone())) {
            notes.push(format!(
                "created system {what} `{name}` as {} would have",
                l.file.display()
            ));
        }
    }
    notes
}

fn is_file(tree: &Tree, path: &str) -> bool {
    tree.lookup(Path::new(path)).is_ok_and(|(_, e)| e.is_file())
}

/// A file of the image with `dest`'s name below `/usr/share` (a package's template).
fn template_for(tree: &Tree, package_files: &[String], dest: &str) -> Option<String> {
    let name = Path::new(dest).file_name()?;
    package_files
        .iter()
        .find(|p| p.starts_with("/usr/share/") && Path::new(p).file_name() == Some(name))
        .filter(|p| is_file(tree, p))
        .cloned()
}

/// `ucf`/`cp` into a missing `/etc` file: copy the source or the template.
fn plan_config_copy(
    script: &Script,
    command: &Command,
    tree: &Tree,
    literals: &[String],
    plan: &mut MaintainerPlan,
) {
    let positional: Vec<&Option<String>> = command.words[1..]
        .iter()
        .filter(|w| !w.as_deref().is_some_and(|w| w.starts_with('-')))
        .collect();
    let [.., source, Some(dest)] = positional.as_slice() else {
        return;
    };
    if !dest.starts_with("/etc/") || tree.exists_following(Path::new(dest)) {
        return;
    }
    let source = source
        .as_deref()
        .filter(|s| is_file(tree, s))
        .map(str::to_owned)
        .or_else(|| template_for(tree, literals, dest));
    let program = command.words[0].as_deref().unwrap_or_default();
    let Some(source) = source else {
        plan.notes.push(format!(
            "{}: {} line {}: `{program}` generates `{dest}`, which the image lacks; add a `[[file]]` for it",
            script.package, script.kind, command.line
        ));
        return;
    };
    let Ok((from, entry)) = tree.lookup(Path::new(&source)) else {
        return;
    };
    let Some(parent) = Path::new(dest.trim_start_matches('/')).parent() else {
        return;
    };
    plan.ops.push(FsOp::CreateDir {
        path: parent.to_path_buf(),
        own: Ownership::root(0o755),
        update: false,
    });
    plan.ops.push(FsOp::CopyFile {
        from,
        to: PathBuf::from(dest.trim_start_matches('/')),
        own: Ownership {
            mode: entry.mode,
            uid: 0,
            gid: 0,
        },
    });
    plan.notes.push(format!(
        "{}: wrote `{dest}` from `{source}` as the {} would (`{program}`); it may edit it first, so review it or add a `[[file]]`",
        script.package, script.kind
    ));
}

/// `dpkg-statoverride --add [--update] USER GROUP MODE PATH`.
fn plan_statoverride(
    script: &Script,
    command: &Command,
    accounts: &Accounts,
    tree: &Tree,
    plan: &mut MaintainerPlan,
) {
    let words = &command.words[1..];
    if !words.iter().any(|w| w.as_deref() == Some("--add")) {
        return;
    }
    let args: Vec<&Option<String>> = words
        .iter()
        .filter(|w| !w.as_deref().is_some_and(|w| w.starts_with("--")))
        .collect();
    let [Some(user), Some(group), Some(mode), Some(path)] = args.as_slice() else {
        plan.notes.push(format!(
            "{}: {} line {}: `dpkg-statoverride --add` with run-time values; set the owner and mode with a `[[file]]` or `[[directory]]`",
            script.package, script.kind, command.line
        ));
        return;
    };
    let (Some(uid), Some(gid), Ok(mode)) = (
        accounts.resolve_uid(user),
        accounts.resolve_gid(group),
        u32::from_str_radix(mode, 8),
    ) else {
        plan.notes.push(format!(
            "{}: {} line {}: cannot apply `dpkg-statoverride --add {user} {group} {mode} {path}` (unknown owner or mode)",
            script.package, script.kind, command.line
        ));
        return;
    };
    if tree.exists_following(Path::new(path)) {
        plan.ops.push(FsOp::SetMetadata {
            path: PathBuf::from(path.trim_start_matches('/')),
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
            recursive: false,
        });
    }
}

/// `systemd-sysusers FILE` / `systemd-tmpfiles --create FILE`: the sysusers and tmpfiles
/// steps apply every file of the standard directories, so only a file outside them (or
/// missing) needs a note.
fn note_systemd_call(script: &Script, command: &Command, tree: &Tree, plan: &mut MaintainerPlan) {
    let program = command.words[0].as_deref().unwrap_or_default();
    let dirs: &[&str] = if program.ends_with("systemd-sysusers") {
        super::sysusers::SYSUSERS_DIRS
    } else {
        super::tmpfiles::TMPFILES_DIRS
    };
    for file in command.words[1..]
        .iter()
        .flatten()
        .filter(|w| !w.starts_with('-') && w.ends_with(".conf"))
    {
        let name = Path::new(file).file_name().unwrap_or_default();
        let standard = dirs
            .iter()
            .any(|dir| tree.exists_following(&Path::new(dir).join(name)));
        if !standard {
            plan.notes.push(format!(
                "{}: {} line {}: `{program}` applies `{file}`, which is not in {}; add its lines to a recipe file there",
                script.package,
                script.kind,
                command.line,
                dirs.iter().map(|d| format!("/{d}")).collect::<Vec<_>>().join(" or ")
            ));
        }
    }
}

/// A redirection into `/etc` of a file the image lacks (debconf-generated configuration).
fn note_generated(script: &Script, command: &Command, tree: &Tree, plan: &mut MaintainerPlan) {
    let mut words = command.words.iter();
    while let Some(word) = words.next() {
        let Some(word) = word.as_deref() else {
            continue;
        };
        let target = match word.trim_start_matches('>') {
            "" if word.starts_with('>') => words.next().cloned().flatten(),
            rest if word.starts_with('>') => Some(rest.to_owned()),
            _ => None,
        };
        if let Some(target) = target
            && target.starts_with("/etc/")
            && !tree.exists_following(Path::new(&target))
        {
            plan.notes.push(format!(
                "{}: {} line {}: writes `{target}` (from debconf answers or a computed value), which the image lacks; add a `[[file]]` if the appliance needs it",
                script.package, script.kind, command.line
            ));
        }
    }
}

/// Plans the file effects of the scripts (accounts: see [`scan_accounts`]). Paths in
/// `provided` (the recipe's own files) are left to the recipe.
pub fn plan_maintainer(
    scripts: &[Script],
    tree: &Tree,
    accounts: &Accounts,
    provided: &BTreeSet<String>,
) -> MaintainerPlan {
    let mut plan = MaintainerPlan::default();
    for script in scripts
        .iter()
        .filter(|s| s.kind == "postinst" || s.kind == "preinst")
    {
        let notes_before = plan.notes.len();
        let commands = commands(&script.text);
        let literals: Vec<String> = commands
            .iter()
            .flat_map(|c| c.words.iter().flatten())
            .filter(|w| w.starts_with('/'))
            .cloned()
            .collect();
        for command in &commands {
            let Some(Some(program)) = command.words.first() else {
                continue;
            };
            let dest = command.words.last().cloned().flatten().unwrap_or_default();
            match program.rsplit('/').next().unwrap_or_default() {
                "ucf" | "cp" if provided.contains(&dest) => {}
                "ucf" | "cp" => plan_config_copy(script, command, tree, &literals, &mut plan),
                "dpkg-statoverride" => {
                    plan_statoverride(script, command, accounts, tree, &mut plan)
                }
                "systemd-sysusers" | "systemd-tmpfiles" => {
                    note_systemd_call(script, command, tree, &mut plan);
                }
                _ => note_generated(script, command, tree, &mut plan),
            }
        }
        // One note per file and script, however often the script writes it.
        let mut files = BTreeSet::new();
        let mut index = notes_before;
        while index < plan.notes.len() {
            let key = plan.notes[index]
                .split('`')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            if plan.notes[index].contains(" writes `") && !files.insert(key) {
                plan.notes.remove(index);
            } else {
                index += 1;
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::sysusers::apply_sysusers;

    fn script(package: &str, text: &str) -> Script {
        Script {
            package: package.into(),
            kind: "postinst".into(),
            text: text.into(),
        }
    }

    const POSTGRESQL_COMMON: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    [ "$DPKG_MAINTSCRIPT_PACKAGE" ] && quiet="--quiet"
    if ! getent passwd postgres > /dev/null; then
        adduser --system $quiet --home /var/lib/postgresql --no-create-home \
            --shell /bin/bash --group --gecos "PostgreSQL administrator" postgres
    fi
    if ! getent group postgres > /dev/null; then
        addgroup --system $quiet postgres
    fi
    if ! id -Gn postgres | grep -qw postgres; then
        adduser $quiet postgres postgres
    fi
    adduser $quiet postgres ssl-cert
fi
"#;

    const DNSMASQ: &str = r#"#!/bin/sh
if [ "$1" = "configure" ]; then
  if [ -z "`id -u dnsmasq 2> /dev/null`" ]; then
    useradd --system \
            --gid nogroup \
            --comment dnsmasq \
            --home-dir /var/lib/misc --no-create-home \
            --shell /usr/sbin/nologin \
            dnsmasq
  fi
fi
"#;

    #[test]
    fn adduser_and_useradd_become_accounts() {
        let scripts = [
            script("postgresql-common", POSTGRESQL_COMMON),
            script("dnsmasq-base", DNSMASQ),
            script("x", "adduser --system $NAME\nuseradd plain\n"),
        ];
        let (lines, notes) = scan_accounts(&scripts);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("only known at run time"), "{notes:?}");
        assert!(notes[1].contains("regular account"), "{notes:?}");
        let mut a = Accounts::debian_base("/bin/sh");
        let before = a.clone();
        apply_sysusers(&mut a, &Tree::new(0), &lines).unwrap();
        let pg = a.user("postgres").unwrap();
        assert_eq!(
            (pg.home.as_str(), pg.shell.as_str(), pg.gecos.as_str()),
            (
                "/var/lib/postgresql",
                "/bin/bash",
                "PostgreSQL administrator"
            )
        );
        assert_eq!(a.group("postgres").unwrap().gid, pg.gid);
        // `ssl-cert` does not exist: created for the membership, as sysusers does.
        assert!(
            a.group("ssl-cert")
                .unwrap()
                .members
                .contains(&"postgres".to_owned())
        );
        let dnsmasq = a.user("dnsmasq").unwrap();
        assert_eq!(
            (dnsmasq.gid, dnsmasq.home.as_str()),
            (65534, "/var/lib/misc")
        );
        let notes = account_notes(&lines, &before);
        assert_eq!(
            notes[0],
            "created system user `postgres` as postgresql-common postinst would have"
        );
        a.validate().unwrap();
    }

    fn tree() -> Tree {
        let mut t = Tree::new(0);
        for d in [
            "etc",
            "etc/ssh",
            "usr",
            "usr/share",
            "usr/share/openssh",
            "usr/bin",
        ] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        t.add_file(
            Path::new("usr/share/openssh/sshd_config"),
            10,
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        t.add_file(
            Path::new("usr/bin/ssh-agent"),
            10,
            Ownership::root(0o755),
            0,
        )
        .unwrap();
        t
    }

    #[test]
    fn ucf_from_a_temporary_file_copies_the_template() {
        let text = r#"
create_sshdconfig() {
	new_config="$(mktemp)"
	cp -aZ /usr/share/openssh/sshd_config "$new_config"
	ucf --three-way --debconf-ok \
		--sum-file /usr/share/openssh/sshd_config.md5sum \
		"$new_config" /etc/ssh/sshd_config
}
CONF=/etc/ssh/other.conf
ucf /nonexistent $CONF
echo "x=$answer" > /etc/generated.conf
echo "y=$answer" >> /etc/generated.conf
"#;
        let plan = plan_maintainer(
            &[script("openssh-server", text)],
            &tree(),
            &Accounts::debian_base("/bin/sh"),
            &BTreeSet::new(),
        );
        assert!(plan.ops.contains(&FsOp::CopyFile {
            from: "usr/share/openssh/sshd_config".into(),
            to: "etc/ssh/sshd_config".into(),
            own: Ownership::root(0o644),
        }));
        assert_eq!(plan.notes.len(), 3, "{:#?}", plan.notes);
        assert!(plan.notes[0].contains("wrote `/etc/ssh/sshd_config`"));
        assert!(plan.notes[1].contains("`/etc/ssh/other.conf`"));
        assert!(plan.notes[2].contains("`/etc/generated.conf`"));
        // A recipe file for the path: nothing to do.
        let provided = BTreeSet::from(["/etc/ssh/sshd_config".to_owned()]);
        let plan = plan_maintainer(
            &[script("openssh-server", text)],
            &tree(),
            &Accounts::debian_base("/bin/sh"),
            &provided,
        );
        assert!(plan.ops.is_empty() && plan.notes.len() == 2, "{plan:?}");
    }

    #[test]
    fn statoverride_sets_owner_and_mode() {
        let text = "if ! dpkg-statoverride --list /usr/bin/ssh-agent >/dev/null; then\n  dpkg-statoverride --update --add root shadow 2755 /usr/bin/ssh-agent\nfi\ndpkg-statoverride --add $U root 0755 /x\n";
        let plan = plan_maintainer(
            &[script("openssh-client", text)],
            &tree(),
            &Accounts::debian_base("/bin/sh"),
            &BTreeSet::new(),
        );
        assert_eq!(
            plan.ops,
            vec![FsOp::SetMetadata {
                path: "usr/bin/ssh-agent".into(),
                mode: Some(0o2755),
                uid: Some(0),
                gid: Some(42),
                recursive: false
            }]
        );
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
    }

    #[test]
    fn systemd_calls_on_packaged_files_need_nothing() {
        let mut t = tree();
        for d in ["usr/lib", "usr/lib/tmpfiles.d"] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        t.add_file(
            Path::new("usr/lib/tmpfiles.d/openssh-client.conf"),
            1,
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        let text = "systemd-tmpfiles ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} --create openssh-client.conf || true\nsystemd-sysusers other.conf\n";
        let plan = plan_maintainer(
            &[script("openssh-client", text)],
            &t,
            &Accounts::debian_base("/bin/sh"),
            &BTreeSet::new(),
        );
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(plan.notes[0].contains("`other.conf`"), "{:?}", plan.notes);
        assert!(plan.ops.is_empty());
    }

    #[test]
    fn redirections_are_not_arguments() {
        let cmds = commands(
            "GROUP=memcache\naddgroup --system $GROUP >/dev/null\nadduser --system x > /dev/null\n",
        );
        let words: Vec<Vec<Option<String>>> = cmds
            .into_iter()
            .map(|c| without_redirections(&c.words))
            .collect();
        assert_eq!(
            words,
            vec![
                vec![
                    Some("addgroup".into()),
                    Some("--system".into()),
                    Some("memcache".into())
                ],
                vec![
                    Some("adduser".into()),
                    Some("--system".into()),
                    Some("x".into())
                ],
            ]
        );
        assert_eq!(redirection("2>&1"), Some("&1"));
        assert_eq!(redirection(">"), Some(""));
        assert_eq!(redirection("x>y"), None);
    }

    #[test]
    fn commands_split_operators_keywords_and_variables() {
        let cmds = commands("A=/x; if true; then echo $A ${A} $B; fi\n");
        let words: Vec<Vec<Option<String>>> = cmds.into_iter().map(|c| c.words).collect();
        assert_eq!(
            words,
            vec![
                vec![Some("true".into())],
                vec![
                    Some("echo".into()),
                    Some("/x".into()),
                    Some("/x".into()),
                    None
                ],
                vec![Some("fi".into())],
            ]
        );
    }
}
