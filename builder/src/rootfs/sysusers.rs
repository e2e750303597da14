//! `sysusers.d(5)`: system users and groups declared by packages.
//!
//! Files are collected from `usr/lib/sysusers.d` and `etc/sysusers.d` (a file in `etc`
//! replaces the same-named file in `usr/lib`), read in file-name order, and applied the way
//! `systemd-sysusers` does: `r` ranges first, then `g`, then `u`, then `m` lines. An
//! existing name is left alone; an explicit id already taken by another name falls back to
//! allocation (and is noted), as sysusers does. Specifiers are expanded with the
//! build-time values of [`Specifiers`]; a line using one that only exists on the running
//! machine (`%m`, `%b`, `%v`) is skipped with a note.
//!
//! Every form of the man page is understood: `u` with `-`, a number, `uid:gid`,
//! `uid:group`, `-:group` or a path; `u!` (also expires the account); `g` with `-`, a
//! number or a path; `m`; `r` with a range or a single id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::accounts::{Accounts, AccountsError, NOLOGIN, SYSTEM_IDS, User, is_valid_name};
use super::specifiers::{Flavour, SpecifierError, Specifiers};
use super::tree::{EntryKind, Tree};
use super::words::split_plain;

/// Directories searched, lowest priority first.
pub const SYSUSERS_DIRS: &[&str] = &["usr/lib/sysusers.d", "etc/sysusers.d"];

/// Errors from sysusers.d files.
#[derive(Debug, Error)]
pub enum SysusersError {
    /// A line could not be parsed.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Applying a line failed.
    #[error("{file}:{line}: cannot apply")]
    Apply {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: AccountsError,
    },
}

/// The id column of a `u` or `g` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    /// `-`: allocate.
    Auto,
    /// A number.
    Fixed(u32),
    /// `uid:gid`, `uid:groupname` or `-:groupname` (`u` only): the uid (allocated when
    /// `None`) and the primary group, by number or name.
    WithGroup(Option<u32>, String),
    /// A path whose owner gives the id.
    FromPath(PathBuf),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysusersLine {
    /// `u name id gecos home shell` (`u!`: the account is also expired, so that not even
    /// a key-based login works).
    User {
        /// Name.
        name: String,
        /// Id column.
        id: IdSpec,
        /// GECOS.
        gecos: String,
        /// Home (default `/`).
        home: String,
        /// Shell (default nologin).
        shell: String,
        /// `u!`.
        locked: bool,
    },
    /// `g name id`.
    Group {
        /// Name.
        name: String,
        /// Id column.
        id: IdSpec,
    },
    /// `m user group`.
    Member {
        /// User.
        user: String,
        /// Group.
        group: String,
    },
    /// `r - first-last`.
    Range {
        /// First id.
        first: u32,
        /// Last id.
        last: u32,
    },
}

/// A parsed line with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The file (tree path).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The value.
    pub value: T,
}

fn column(fields: &[String], index: usize) -> Option<&str> {
    fields.get(index).map(String::as_str).filter(|v| *v != "-")
}

/// An id systemd accepts: not the 16-bit and 32-bit "invalid" values.
fn parse_number(text: &str) -> Option<u32> {
    text.parse::<u32>()
        .ok()
        .filter(|id| *id != u32::from(u16::MAX) && *id != u32::MAX)
}

fn parse_id(field: Option<&str>, user_line: bool) -> Result<IdSpec, String> {
    let Some(field) = field else {
        return Ok(IdSpec::Auto);
    };
    let invalid = || format!("invalid id `{field}`");
    if field.starts_with('/') {
        return Ok(IdSpec::FromPath(PathBuf::from(field)));
    }
    if let Some((uid, group)) = field.split_once(':') {
        if !user_line || group.is_empty() || group == "-" {
            return Err(invalid());
        }
        let uid = match uid {
            "-" => None,
            uid => Some(parse_number(uid).ok_or_else(invalid)?),
        };
        return Ok(IdSpec::WithGroup(uid, group.to_owned()));
    }
    parse_number(field).map(IdSpec::Fixed).ok_or_else(invalid)
}

fn parse_range(range: &str) -> Result<(u32, u32), String> {
    let invalid = || format!("invalid range `{range}`");
    let (first, last) = range.split_once('-').unwrap_or((range, range));
    let first = parse_number(first).ok_or_else(invalid)?;
    let last = parse_number(last).ok_or_else(invalid)?;
    if first > last {
        return Err(invalid());
    }
    Ok((first, last))
}

/// Parses one line's fields (specifiers already expanded).
fn parse_fields(fields: &[String]) -> Result<SysusersLine, String> {
    let kind = fields[0].as_str();
    let name = column(fields, 1).map(str::to_owned);
    let need_name = || name.clone().ok_or_else(|| "missing name".to_owned());
    Ok(match kind {
        "u" | "u!" => SysusersLine::User {
            name: need_name()?,
            id: parse_id(column(fields, 2), true)?,
            gecos: column(fields, 3).unwrap_or_default().to_owned(),
            home: column(fields, 4).unwrap_or("/").to_owned(),
            shell: column(fields, 5).unwrap_or(NOLOGIN).to_owned(),
            locked: kind == "u!",
        },
        "g" => SysusersLine::Group {
            name: need_name()?,
            id: parse_id(column(fields, 2), false)?,
        },
        "m" => SysusersLine::Member {
            user: need_name()?,
            group: column(fields, 2)
                .ok_or_else(|| "missing group".to_owned())?
                .to_owned(),
        },
        "r" => {
            if name.is_some() {
                return Err("the name of an `r` line must be `-`".to_owned());
            }
            let range = column(fields, 2).ok_or_else(|| "missing range".to_owned())?;
            let (first, last) = parse_range(range)?;
            SysusersLine::Range { first, last }
        }
        other => return Err(format!("unknown line type `{other}`")),
    })
}

/// Parses one file, expanding specifiers with `specifiers`. Returns the lines and notes
/// about lines skipped because a specifier only has a value on the running machine.
pub fn parse_sysusers(
    file: &Path,
    text: &str,
    specifiers: &Specifiers,
) -> Result<(Vec<Located<SysusersLine>>, Vec<String>), SysusersError> {
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| SysusersError::Parse {
            file: file.to_path_buf(),
            line: line_no,
            message,
        };
        let mut fields = split_plain(trimmed).map_err(|_| err("unterminated quote".to_owned()))?;
        let mut skipped = None;
        for field in fields.iter_mut().skip(1) {
            match specifiers.expand(field, Flavour::Sysusers) {
                Ok(expanded) => *field = expanded,
                Err(SpecifierError::RuntimeOnly(c)) => {
                    skipped = Some(format!("specifier `%{c}` only has a value at run time"));
                }
                Err(other) => return Err(err(other.to_string())),
            }
        }
        if let Some(reason) = skipped {
            notes.push(format!(
                "{}:{line_no}: skipped `{trimmed}`: {reason}",
                file.display()
            ));
            continue;
        }
        lines.push(Located {
            file: file.to_path_buf(),
            line: line_no,
            value: parse_fields(&fields).map_err(err)?,
        });
    }
    Ok((lines, notes))
}

/// The sysusers.d files in the tree, in application order: file name order, a file in
/// `etc/sysusers.d` replacing the one of the same name in `usr/lib/sysusers.d`.
pub fn find_config_files(tree: &Tree, dirs: &[&str]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(resolved) = tree.resolve(Path::new(dir), true) else {
            continue;
        };
        for (path, _) in tree.children(&resolved.path) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".conf") {
                continue;
            }
            // A symlink to /dev/null masks the file; any other entry must be a file.
            let masked = tree.get(path).is_some_and(|e| {
                matches!(&e.kind, EntryKind::Symlink { target } if target.as_path() == Path::new("/dev/null"))
            });
            match tree.lookup(path) {
                _ if masked => {
                    by_name.remove(name);
                }
                Ok((_, entry)) if entry.is_file() => {
                    by_name.insert(name.to_owned(), path.to_path_buf());
                }
                _ => {
                    by_name.remove(name);
                }
            }
        }
    }
    by_name.into_values().collect()
}

/// Allocates from the `r` ranges if any were given, else from [`SYSTEM_IDS`].
fn allocate(ranges: &[(u32, u32)], free: impl Fn(u32) -> bool) -> Option<u32> {
    let default = [SYSTEM_IDS];
    let ranges = if ranges.is_empty() {
        &default[..]
    } else {
        ranges
    };
    ranges
        .iter()
        .flat_map(|(a, b)| *a..=*b)
        .find(|id| free(*id))
}

/// The primary gid of a `u` line's user: the named or numbered group (a number without a
/// group gets a group named like the user with that id, as sysusers does), else the
/// user's own group, created with the uid as gid when free.
fn primary_gid(
    accounts: &mut Accounts,
    ranges: &[(u32, u32)],
    l: &Located<SysusersLine>,
    name: &str,
    uid: u32,
    wanted_group: Option<&str>,
) -> Result<u32, SysusersError> {
    let apply_err = |source| SysusersError::Apply {
        file: l.file.clone(),
        line: l.line,
        source,
    };
    let exhausted = || {
        apply_err(AccountsError::RangeExhausted {
            name: name.to_owned(),
            first: SYSTEM_IDS.0,
            last: SYSTEM_IDS.1,
        })
    };
    match wanted_group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) if accounts.gid_free(gid) => accounts
                .add_group(name, Some(gid), SYSTEM_IDS)
                .map_err(apply_err),
            Ok(gid) => Ok(gid),
            Err(_) => accounts.resolve_gid(group).ok_or_else(|| {
                apply_err(AccountsError::UnknownGroup {
                    user: name.to_owned(),
                    group: group.to_owned(),
                })
            }),
        },
        None => match accounts.group(name) {
            Some(group) => Ok(group.gid),
            None => {
                let gid = if accounts.gid_free(uid) {
                    uid
                } else {
                    allocate(ranges, |id| accounts.gid_free(id)).ok_or_else(exhausted)?
                };
                accounts
                    .add_group(name, Some(gid), SYSTEM_IDS)
                    .map_err(apply_err)
            }
        },
    }
}

/// Applies one `u` line.
fn apply_user(
    accounts: &mut Accounts,
    tree: &Tree,
    ranges: &[(u32, u32)],
    l: &Located<SysusersLine>,
    notes: &mut Vec<String>,
) -> Result<(), SysusersError> {
    let SysusersLine::User {
        name,
        id,
        gecos,
        home,
        shell,
        locked,
    } = &l.value
    else {
        return Ok(());
    };
    let fail = |source| SysusersError::Apply {
        file: l.file.clone(),
        line: l.line,
        source,
    };
    if !is_valid_name(name) {
        return Err(fail(AccountsError::InvalidName { name: name.clone() }));
    }
    if accounts.user(name).is_some() {
        return Ok(());
    }
    let path_uid = |path: &Path| tree.lookup(path).ok().map(|(_, e)| e.uid);
    let (wanted_uid, wanted_group) = match id {
        IdSpec::Auto => (None, None),
        IdSpec::Fixed(uid) => (Some(*uid), None),
        IdSpec::WithGroup(uid, group) => (*uid, Some(group.as_str())),
        IdSpec::FromPath(path) => (path_uid(path), None),
    };
    let uid = match wanted_uid.filter(|uid| accounts.uid_free(*uid)) {
        Some(uid) => uid,
        None => {
            if let Some(uid) = wanted_uid {
                notes.push(format!(
                    "{}:{}: uid {uid} for `{name}` is taken; allocated another",
                    l.file.display(),
                    l.line
                ));
            }
            // Prefer an id free as uid and as gid so the user's group can match.
            let own_group = wanted_group.is_some() || accounts.group(name).is_some();
            allocate(ranges, |id| {
                accounts.uid_free(id) && (own_group || accounts.gid_free(id))
            })
            .or_else(|| allocate(ranges, |id| accounts.uid_free(id)))
            .ok_or_else(|| {
                fail(AccountsError::RangeExhausted {
                    name: name.clone(),
                    first: SYSTEM_IDS.0,
                    last: SYSTEM_IDS.1,
                })
            })?
        }
    };
    let gid = primary_gid(accounts, ranges, l, name, uid, wanted_group)?;
    accounts.push_user(User {
        name: name.clone(),
        uid,
        gid,
        gecos: gecos.clone(),
        home: home.clone(),
        shell: shell.clone(),
        password: "!*".to_owned(),
        expired: *locked,
    });
    Ok(())
}

/// Applies parsed lines to the account database. Returns notes for the build report.
pub fn apply_sysusers(
    accounts: &mut Accounts,
    tree: &Tree,
    lines: &[Located<SysusersLine>],
) -> Result<Vec<String>, SysusersError> {
    let mut notes = Vec::new();
    let mut ranges: Vec<(u32, u32)> = lines
        .iter()
        .filter_map(|l| match l.value {
            SysusersLine::Range { first, last } => Some((first, last)),
            _ => None,
        })
        .collect();
    ranges.sort_unstable();
    let exhausted = |l: &Located<SysusersLine>, name: &str| SysusersError::Apply {
        file: l.file.clone(),
        line: l.line,
        source: AccountsError::RangeExhausted {
            name: name.to_owned(),
            first: SYSTEM_IDS.0,
            last: SYSTEM_IDS.1,
        },
    };
    let apply_err = |l: &Located<SysusersLine>| {
        let (file, line) = (l.file.clone(), l.line);
        move |source| SysusersError::Apply { file, line, source }
    };
    let path_owner = |path: &Path| tree.lookup(path).ok().map(|(_, e)| (e.uid, e.gid));
    let invalid = |l: &Located<SysusersLine>, name: &str| SysusersError::Apply {
        file: l.file.clone(),
        line: l.line,
        source: AccountsError::InvalidName {
            name: name.to_owned(),
        },
    };

    // Groups.
    for l in lines {
        let SysusersLine::Group { name, id } = &l.value else {
            continue;
        };
        if !is_valid_name(name) {
            return Err(invalid(l, name));
        }
        if accounts.group(name).is_some() {
            continue;
        }
        let wanted = match id {
            IdSpec::Fixed(gid) => Some(*gid),
            IdSpec::FromPath(path) => path_owner(path).map(|(_, gid)| gid),
            IdSpec::Auto | IdSpec::WithGroup(..) => None,
        };
        let gid = match wanted.filter(|gid| accounts.gid_free(*gid)) {
            Some(gid) => gid,
            None => {
                if let Some(gid) = wanted {
                    notes.push(format!(
                        "{}:{}: gid {gid} for `{name}` is taken; allocated another",
                        l.file.display(),
                        l.line
                    ));
                }
                allocate(&ranges, |id| accounts.gid_free(id)).ok_or_else(|| exhausted(l, name))?
            }
        };
        accounts
            .add_group(name, Some(gid), SYSTEM_IDS)
            .map_err(apply_err(l))?;
    }

    // Users.
    for l in lines {
        if let SysusersLine::User { .. } = &l.value {
            apply_user(accounts, tree, &ranges, l, &mut notes)?;
        }
    }

    // Memberships: missing groups are created, as sysusers does.
    for l in lines {
        let SysusersLine::Member { user, group } = &l.value else {
            continue;
        };
        if !is_valid_name(group) {
            return Err(invalid(l, group));
        }
        if accounts.user(user).is_none() {
            notes.push(format!(
                "{}:{}: `m {user} {group}` names an unknown user; skipped",
                l.file.display(),
                l.line
            ));
            continue;
        }
        if accounts.group(group).is_none() {
            let gid =
                allocate(&ranges, |id| accounts.gid_free(id)).ok_or_else(|| exhausted(l, group))?;
            accounts
                .add_group(group, Some(gid), SYSTEM_IDS)
                .map_err(apply_err(l))?;
        }
        accounts.add_member(group, user).map_err(apply_err(l))?;
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Ownership;

    fn specifiers() -> Specifiers {
        Specifiers {
            hostname: "box".into(),
            os_id: "jeos-box".into(),
            ..Specifiers::default()
        }
    }

    fn parse(text: &str) -> Vec<Located<SysusersLine>> {
        parse_sysusers(Path::new("usr/lib/sysusers.d/t.conf"), text, &specifiers())
            .unwrap()
            .0
    }

    fn user_line(text: &str) -> SysusersLine {
        parse(text).remove(0).value
    }

    fn user(name: &str, id: IdSpec) -> SysusersLine {
        SysusersLine::User {
            name: name.into(),
            id,
            gecos: String::new(),
            home: "/".into(),
            shell: NOLOGIN.into(),
            locked: false,
        }
    }

    #[test]
    fn user_id_forms() {
        assert_eq!(user_line("u a"), user("a", IdSpec::Auto));
        assert_eq!(user_line("u a -"), user("a", IdSpec::Auto));
        assert_eq!(user_line("u a 901"), user("a", IdSpec::Fixed(901)));
        assert_eq!(
            user_line("u a 901:902"),
            user("a", IdSpec::WithGroup(Some(901), "902".into()))
        );
        assert_eq!(
            user_line("u a 901:web"),
            user("a", IdSpec::WithGroup(Some(901), "web".into()))
        );
        // openssh-server's line.
        assert_eq!(
            user_line("u sshd -:nogroup \"sshd user\" /run/sshd"),
            SysusersLine::User {
                name: "sshd".into(),
                id: IdSpec::WithGroup(None, "nogroup".into()),
                gecos: "sshd user".into(),
                home: "/run/sshd".into(),
                shell: NOLOGIN.into(),
                locked: false,
            }
        );
        assert_eq!(
            user_line("u a /var/lib/a"),
            user("a", IdSpec::FromPath("/var/lib/a".into()))
        );
        assert_eq!(
            user_line("u! a 903 - - /bin/sh"),
            SysusersLine::User {
                name: "a".into(),
                id: IdSpec::Fixed(903),
                gecos: String::new(),
                home: "/".into(),
                shell: "/bin/sh".into(),
                locked: true,
            }
        );
        for bad in [
            "u a x",
            "u a 65535",
            "u a 4294967295",
            "u a 1:",
            "u a 1:-",
            "u a x:web",
        ] {
            assert!(
                parse_sysusers(Path::new("a.conf"), bad, &specifiers()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn group_member_and_range_forms() {
        assert_eq!(
            user_line("g web"),
            SysusersLine::Group {
                name: "web".into(),
                id: IdSpec::Auto
            }
        );
        assert_eq!(
            user_line("g web 850"),
            SysusersLine::Group {
                name: "web".into(),
                id: IdSpec::Fixed(850)
            }
        );
        assert_eq!(
            user_line("g web /srv"),
            SysusersLine::Group {
                name: "web".into(),
                id: IdSpec::FromPath("/srv".into())
            }
        );
        assert!(parse_sysusers(Path::new("a.conf"), "g web 1:2", &specifiers()).is_err());
        assert_eq!(
            user_line("m app web"),
            SysusersLine::Member {
                user: "app".into(),
                group: "web".into()
            }
        );
        assert!(parse_sysusers(Path::new("a.conf"), "m app", &specifiers()).is_err());
        assert_eq!(
            user_line("r - 500-599"),
            SysusersLine::Range {
                first: 500,
                last: 599
            }
        );
        assert_eq!(
            user_line("r - 777"),
            SysusersLine::Range {
                first: 777,
                last: 777
            }
        );
        assert!(parse_sysusers(Path::new("a.conf"), "r x 1-2", &specifiers()).is_err());
    }

    #[test]
    fn specifiers_are_expanded_or_the_line_skipped() {
        let (lines, notes) = parse_sysusers(
            Path::new("a.conf"),
            "u svc-%l - \"%o service\" /var/lib/%H\nu m-%m -\n",
            &specifiers(),
        )
        .unwrap();
        assert_eq!(
            lines[0].value,
            SysusersLine::User {
                name: "svc-box".into(),
                id: IdSpec::Auto,
                gecos: "jeos-box service".into(),
                home: "/var/lib/box".into(),
                shell: NOLOGIN.into(),
                locked: false,
            }
        );
        assert_eq!(lines.len(), 1);
        assert!(notes[0].contains("%m"), "{notes:?}");
        let err = parse_sysusers(Path::new("a.conf"), "u %q -", &specifiers()).unwrap_err();
        assert_eq!(err.to_string(), "a.conf:1: unknown specifier `%q`");
    }

    #[test]
    fn group_forms_apply() {
        let mut a = Accounts::debian_base("/bin/sh");
        let lines = parse(
            "u sshd -:nogroup \"sshd user\" /run/sshd\nu w 910:911\nu x 912:www-data\nu! y 913\n",
        );
        apply_sysusers(&mut a, &Tree::new(0), &lines).unwrap();
        let sshd = a.user("sshd").unwrap();
        assert_eq!((sshd.uid, sshd.gid), (100, 65534));
        assert!(a.group("sshd").is_none(), "no own group with `-:group`");
        // A numeric gid without a group gets one named like the user.
        let w = a.user("w").unwrap();
        assert_eq!((w.uid, w.gid), (910, 911));
        assert_eq!(a.group("w").unwrap().gid, 911);
        assert_eq!(a.user("x").unwrap().gid, 33);
        assert!(a.user("y").unwrap().expired);
        assert!(!sshd.expired);
        let files = a.render(0);
        assert!(
            files.shadow.contains("y:!*:0:0:99999:7::1:\n"),
            "{}",
            files.shadow
        );
        a.validate().unwrap();
    }

    #[test]
    fn parses_all_line_types() {
        let lines = parse(
            "# comment\n\nu nginx - \"nginx user\" /var/lib/nginx\ng web 850\nm nginx web\nr - 500-599\nu x 901:web\n",
        );
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0].value,
            SysusersLine::User {
                name: "nginx".into(),
                id: IdSpec::Auto,
                gecos: "nginx user".into(),
                home: "/var/lib/nginx".into(),
                shell: NOLOGIN.into(),
                locked: false,
            }
        );
        assert_eq!(lines[4].line, 7);
    }

    #[test]
    fn parse_errors_carry_file_and_line() {
        let s = specifiers();
        let err = parse_sysusers(Path::new("a.conf"), "\nz foo\n", &s).unwrap_err();
        assert_eq!(err.to_string(), "a.conf:2: unknown line type `z`");
        assert!(parse_sysusers(Path::new("a.conf"), "u foo abc", &s).is_err());
        assert!(parse_sysusers(Path::new("a.conf"), "r - 9-1", &s).is_err());
        assert!(parse_sysusers(Path::new("a.conf"), "u \"foo", &s).is_err());
        assert!(parse_sysusers(Path::new("a.conf"), "u", &s).is_err());
        let (lines, notes) = parse_sysusers(Path::new("a.conf"), "u %b-x -", &s).unwrap();
        assert!(lines.is_empty() && notes.len() == 1);
    }

    #[test]
    fn applies_groups_then_users_then_members() {
        let mut a = Accounts::debian_base("/bin/sh");
        let tree = Tree::new(0);
        let lines = parse("m app extra\nu app -\ng fixed 777\nu www-data 5\nu clash 33\n");
        let notes = apply_sysusers(&mut a, &tree, &lines).unwrap();
        // users (100) is taken as a gid, so the first matching pair is 101.
        let app = a.user("app").unwrap();
        assert_eq!((app.uid, app.gid), (101, 101));
        assert_eq!(a.group("fixed").unwrap().gid, 777);
        // www-data exists: untouched.
        assert_eq!(a.user("www-data").unwrap().uid, 33);
        // uid 33 is taken: allocated instead, with a note.
        assert_eq!(a.user("clash").unwrap().uid, 102);
        assert_eq!(notes.len(), 1);
        // `extra` was created for the membership.
        assert_eq!(a.group("extra").unwrap().members, vec!["app".to_owned()]);
        a.validate().unwrap();
    }

    #[test]
    fn ranges_restrict_allocation_and_paths_give_ids() {
        let mut a = Accounts::debian_base("/bin/sh");
        let mut tree = Tree::new(0);
        tree.add_dir(
            Path::new("srv"),
            Ownership {
                mode: 0o755,
                uid: 640,
                gid: 641,
            },
            0,
        )
        .unwrap();
        let lines = parse("r - 500-501\nu one -\nu two /srv\n");
        apply_sysusers(&mut a, &tree, &lines).unwrap();
        assert_eq!(a.user("one").unwrap().uid, 500);
        assert_eq!(a.user("two").unwrap().uid, 640);
        let lines = parse("r - 500-501\nu three -\nu four -\n");
        let err = apply_sysusers(&mut a, &tree, &lines).unwrap_err();
        assert!(matches!(
            err,
            SysusersError::Apply {
                source: AccountsError::RangeExhausted { .. },
                line: 3,
                ..
            }
        ));
    }

    #[test]
    fn unknown_primary_group_is_an_error() {
        let mut a = Accounts::debian_base("/bin/sh");
        let lines = parse("u x 900:nosuch\n");
        let err = apply_sysusers(&mut a, &Tree::new(0), &lines).unwrap_err();
        assert!(matches!(
            err,
            SysusersError::Apply {
                source: AccountsError::UnknownGroup { .. },
                ..
            }
        ));
    }

    #[test]
    fn etc_overrides_usr_lib_and_dev_null_masks() {
        let mut tree = Tree::new(0);
        let d = Ownership::root(0o755);
        for dir in [
            "usr",
            "usr/lib",
            "usr/lib/sysusers.d",
            "etc",
            "etc/sysusers.d",
            "dev",
        ] {
            tree.add_dir(Path::new(dir), d, 0).unwrap();
        }
        let f = Ownership::root(0o644);
        tree.add_file(Path::new("dev/null"), 0, f, 0).unwrap();
        tree.add_file(Path::new("usr/lib/sysusers.d/b.conf"), 1, f, 0)
            .unwrap();
        tree.add_file(Path::new("usr/lib/sysusers.d/a.conf"), 1, f, 0)
            .unwrap();
        tree.add_file(Path::new("usr/lib/sysusers.d/c.conf"), 1, f, 0)
            .unwrap();
        tree.add_file(Path::new("usr/lib/sysusers.d/README"), 1, f, 0)
            .unwrap();
        tree.add_file(Path::new("etc/sysusers.d/b.conf"), 1, f, 0)
            .unwrap();
        tree.add_symlink(
            Path::new("etc/sysusers.d/c.conf"),
            Path::new("/dev/null"),
            0,
            0,
            0,
        )
        .unwrap();
        let files = find_config_files(&tree, SYSUSERS_DIRS);
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            ["usr/lib/sysusers.d/a.conf", "etc/sysusers.d/b.conf"]
        );
    }
}
