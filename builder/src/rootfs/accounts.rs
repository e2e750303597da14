//! `/etc/passwd`, `/etc/group`, `/etc/shadow` and `/etc/gshadow`.
//!
//! jeos runs no maintainer scripts, so it writes what `base-passwd`'s `update-passwd`,
//! `adduser --system` and `systemd-sysusers` would leave behind:
//!
//! 1. the static entries of base-passwd's `passwd.master` and `group.master` (Debian's
//!    reserved ids 0-99 and 65534; `gnats` is gone since base-passwd 3.6.0, `_apt` is 42);
//! 2. the recipe's groups and users;
//! 3. users and groups declared by packages in `sysusers.d` (see [`super::sysusers`]).
//!
//! Dynamic ids are allocated deterministically: the lowest free id of the range in the
//! order entries are added (system: 100-999 like adduser's `FIRST_SYSTEM_UID`; regular:
//! 1000-59999). Every password is locked: `*` (no password can ever work, yet the
//! account is not locked, so key-based logins work), unless the recipe gives a hash.

use std::collections::BTreeSet;
use std::path::PathBuf;

use thiserror::Error;

use super::staging::FsOp;
use super::tree::Ownership;

/// System account id range (adduser's `FIRST_SYSTEM_UID`..`LAST_SYSTEM_UID`).
pub const SYSTEM_IDS: (u32, u32) = (100, 999);
/// Regular account id range (adduser's `FIRST_UID`..`LAST_UID`).
pub const REGULAR_IDS: (u32, u32) = (1000, 59999);
/// The shell of accounts that cannot log in.
pub const NOLOGIN: &str = "/usr/sbin/nologin";
/// Debian's `shadow` group: owns `/etc/shadow` and `/etc/gshadow`.
pub const SHADOW_GID: u32 = 42;

/// Errors from building the account database.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AccountsError {
    /// A user or group name breaks Debian's naming rules.
    #[error("invalid user or group name `{name}`")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A field contains `:` or a newline, which would corrupt the file.
    #[error("invalid {field} `{value}` for `{name}`: it must not contain `:` or a newline")]
    InvalidField {
        /// Account name.
        name: String,
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A user with this name exists with different settings.
    #[error("user `{name}` already exists with uid {existing}")]
    UserExists {
        /// The name.
        name: String,
        /// Its uid.
        existing: u32,
    },
    /// A group with this name exists with a different gid.
    #[error("group `{name}` already exists with gid {existing}")]
    GroupExists {
        /// The name.
        name: String,
        /// Its gid.
        existing: u32,
    },
    /// The requested uid belongs to another user.
    #[error("uid {uid} for `{name}` is already used by `{owner}`")]
    UidTaken {
        /// The uid.
        uid: u32,
        /// The user asking for it.
        name: String,
        /// Who has it.
        owner: String,
    },
    /// The requested gid belongs to another group.
    #[error("gid {gid} for `{name}` is already used by `{owner}`")]
    GidTaken {
        /// The gid.
        gid: u32,
        /// The group asking for it.
        name: String,
        /// Who has it.
        owner: String,
    },
    /// A user names a group that does not exist.
    #[error("user `{user}` refers to unknown group `{group}`")]
    UnknownGroup {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// A name or number that should be a user is not one.
    #[error("unknown user `{name}`")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// No free id is left in the range.
    #[error("no free id in {first}-{last} for `{name}`")]
    RangeExhausted {
        /// Who needed one.
        name: String,
        /// Range start.
        first: u32,
        /// Range end.
        last: u32,
    },
}

/// A user to create (from the recipe).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Fixed uid; allocated when `None`.
    pub uid: Option<u32>,
    /// Primary group name; `None` creates a group named like the user (same id if free).
    pub group: Option<String>,
    /// Supplementary groups (must exist).
    pub groups: Vec<String>,
    /// Home directory; default `/home/<name>` (regular) or `/nonexistent` (system).
    pub home: Option<String>,
    /// Login shell; default `/bin/sh` (regular) or [`NOLOGIN`] (system).
    pub shell: Option<String>,
    /// GECOS (full name) field.
    pub gecos: Option<String>,
    /// A system account (id from [`SYSTEM_IDS`], password `*`).
    pub system: bool,
    /// A crypt(3) hash for `/etc/shadow`; locked when `None`.
    pub password_hash: Option<String>,
}

/// A group to create (from the recipe).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupConfig {
    /// Group name.
    pub name: String,
    /// Fixed gid; allocated when `None`.
    pub gid: Option<u32>,
    /// Allocate from [`SYSTEM_IDS`] rather than [`REGULAR_IDS`].
    pub system: bool,
}

/// One `/etc/passwd` + `/etc/shadow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// GECOS.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Shell.
    pub shell: String,
    /// Shadow password field (`*`, `!` or a hash).
    pub password: String,
    /// The account has expired (shadow expiration day 1): not even a key-based login
    /// works (`u!` in sysusers.d).
    pub expired: bool,
}

/// One `/etc/group` + `/etc/gshadow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// gid.
    pub gid: u32,
    /// Supplementary members.
    pub members: Vec<String>,
}

/// The account database, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

/// base-passwd's `passwd.master`: name, uid, gid, gecos, home, shell.
const BASE_USERS: &[(&str, u32, u32, &str, &str, &str)] = &[
    ("root", 0, 0, "root", "/root", "/bin/sh"),
    ("daemon", 1, 1, "daemon", "/usr/sbin", NOLOGIN),
    ("bin", 2, 2, "bin", "/bin", NOLOGIN),
    ("sys", 3, 3, "sys", "/dev", NOLOGIN),
    ("sync", 4, 65534, "sync", "/bin", "/bin/sync"),
    ("games", 5, 60, "games", "/usr/games", NOLOGIN),
    ("man", 6, 12, "man", "/var/cache/man", NOLOGIN),
    ("lp", 7, 7, "lp", "/var/spool/lpd", NOLOGIN),
    ("mail", 8, 8, "mail", "/var/mail", NOLOGIN),
    ("news", 9, 9, "news", "/var/spool/news", NOLOGIN),
    ("uucp", 10, 10, "uucp", "/var/spool/uucp", NOLOGIN),
    ("proxy", 13, 13, "proxy", "/bin", NOLOGIN),
    ("www-data", 33, 33, "www-data", "/var/www", NOLOGIN),
    ("backup", 34, 34, "backup", "/var/backups", NOLOGIN),
    ("list", 38, 38, "Mailing List Manager", "/var/list", NOLOGIN),
    ("irc", 39, 39, "ircd", "/run/ircd", NOLOGIN),
    ("_apt", 42, 65534, "", "/nonexistent", NOLOGIN),
    ("nobody", 65534, 65534, "nobody", "/nonexistent", NOLOGIN),
];

/// base-passwd's `group.master`: name, gid.
const BASE_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("daemon", 1),
    ("bin", 2),
    ("sys", 3),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("lp", 7),
    ("mail", 8),
    ("news", 9),
    ("uucp", 10),
    ("man", 12),
    ("proxy", 13),
    ("kmem", 15),
    ("dialout", 20),
    ("fax", 21),
    ("voice", 22),
    ("cdrom", 24),
    ("floppy", 25),
    ("tape", 26),
    ("sudo", 27),
    ("audio", 29),
    ("dip", 30),
    ("www-data", 33),
    ("backup", 34),
    ("operator", 37),
    ("list", 38),
    ("irc", 39),
    ("src", 40),
    ("shadow", 42),
    ("utmp", 43),
    ("video", 44),
    ("sasl", 45),
    ("plugdev", 46),
    ("staff", 50),
    ("games", 60),
    ("users", 100),
    ("nogroup", 65534),
];

/// Debian's rule for account names (adduser's `SYS_NAME_REGEX`, plus the length limit):
/// `[a-z_][a-z0-9_-]*[$]?`, at most 32 bytes.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    let rest = rest.strip_suffix(b"$").unwrap_or(rest);
    bytes.len() <= 32
        && (first.is_ascii_lowercase() || *first == b'_')
        && rest
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

fn check_field(name: &str, field: &'static str, value: &str) -> Result<(), AccountsError> {
    if value.contains([':', '\n']) {
        return Err(AccountsError::InvalidField {
            name: name.to_owned(),
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The four files, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFiles {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/shadow`.
    pub shadow: String,
    /// `/etc/gshadow`.
    pub gshadow: String,
}

impl Accounts {
    /// The base-passwd entries. `root_shell` is `/bin/bash` when bash is in the image,
    /// else `/bin/sh` (base-passwd says bash, but a minimal closure may not have it).
    pub fn debian_base(root_shell: &str) -> Self {
        let users = BASE_USERS
            .iter()
            .map(|(name, uid, gid, gecos, home, shell)| User {
                name: (*name).to_owned(),
                uid: *uid,
                gid: *gid,
                gecos: (*gecos).to_owned(),
                home: (*home).to_owned(),
                shell: if *name == "root" {
                    root_shell.to_owned()
                } else {
                    (*shell).to_owned()
                },
                password: "*".to_owned(),
                expired: false,
            })
            .collect();
        let groups = BASE_GROUPS
            .iter()
            .map(|(name, gid)| Group {
                name: (*name).to_owned(),
                gid: *gid,
                members: Vec::new(),
            })
            .collect();
        Self { users, groups }
    }

    /// Users in file order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Groups in file order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    fn user_by_uid(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    fn group_by_gid(&self, gid: u32) -> Option<&Group> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// Whether `uid` is free.
    pub fn uid_free(&self, uid: u32) -> bool {
        self.user_by_uid(uid).is_none()
    }

    /// Whether `gid` is free.
    pub fn gid_free(&self, gid: u32) -> bool {
        self.group_by_gid(gid).is_none()
    }

    /// A user name or decimal uid to a uid (tmpfiles.d and recipe owners).
    pub fn resolve_uid(&self, spec: &str) -> Option<u32> {
        match spec.parse::<u32>() {
            Ok(uid) => Some(uid),
            Err(_) => self.user(spec).map(|u| u.uid),
        }
    }

    /// A group name or decimal gid to a gid.
    pub fn resolve_gid(&self, spec: &str) -> Option<u32> {
        match spec.parse::<u32>() {
            Ok(gid) => Some(gid),
            Err(_) => self.group(spec).map(|g| g.gid),
        }
    }

    /// The lowest id in `range` for which `free` holds.
    fn allocate(
        name: &str,
        range: (u32, u32),
        free: impl Fn(u32) -> bool,
    ) -> Result<u32, AccountsError> {
        (range.0..=range.1)
            .find(|id| free(*id))
            .ok_or(AccountsError::RangeExhausted {
                name: name.to_owned(),
                first: range.0,
                last: range.1,
            })
    }

    /// Adds a group. An existing group of that name is fine if `gid` is `None` or equal.
    /// Returns its gid.
    pub fn add_group(
        &mut self,
        name: &str,
        gid: Option<u32>,
        range: (u32, u32),
    ) -> Result<u32, AccountsError> {
        if !is_valid_name(name) {
            return Err(AccountsError::InvalidName {
                name: name.to_owned(),
            });
        }
        if let Some(existing) = self.group(name) {
            return match gid {
                Some(gid) if gid != existing.gid => Err(AccountsError::GroupExists {
                    name: name.to_owned(),
                    existing: existing.gid,
                }),
                _ => Ok(existing.gid),
            };
        }
        let gid = match gid {
            Some(gid) => {
                if let Some(owner) = self.group_by_gid(gid) {
                    return Err(AccountsError::GidTaken {
                        gid,
                        name: name.to_owned(),
                        owner: owner.name.clone(),
                    });
                }
                gid
            }
            None => Self::allocate(name, range, |id| self.gid_free(id))?,
        };
        self.groups.push(Group {
            name: name.to_owned(),
            gid,
            members: Vec::new(),
        });
        Ok(gid)
    }

    /// Adds `user` to the supplementary members of `group` (once).
    pub fn add_member(&mut self, group: &str, user: &str) -> Result<(), AccountsError> {
        let entry = self
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| AccountsError::UnknownGroup {
                user: user.to_owned(),
                group: group.to_owned(),
            })?;
        if !entry.members.iter().any(|m| m == user) {
            entry.members.push(user.to_owned());
        }
        Ok(())
    }

    /// Adds a user (and its group when `group` is `None`). Returns the plan of its home
    /// directory when one must be created.
    pub fn add_user(&mut self, config: &UserConfig) -> Result<Option<FsOp>, AccountsError> {
        let name = config.name.as_str();
        if !is_valid_name(name) {
            return Err(AccountsError::InvalidName {
                name: name.to_owned(),
            });
        }
        for (field, value) in [
            ("home", config.home.as_deref()),
            ("shell", config.shell.as_deref()),
            ("gecos", config.gecos.as_deref()),
            ("password hash", config.password_hash.as_deref()),
        ] {
            if let Some(value) = value {
                check_field(name, field, value)?;
            }
        }
        let range = if config.system {
            SYSTEM_IDS
        } else {
            REGULAR_IDS
        };
        if let Some(existing) = self.user(name) {
            // The recipe may add groups to an existing account (e.g. `www-data`), as long as
            // it does not ask for another uid or primary group.
            let (existing_uid, existing_gid) = (existing.uid, existing.gid);
            let group_differs = config
                .group
                .as_ref()
                .is_some_and(|g| self.group(g).map(|g| g.gid) != Some(existing_gid));
            if config.uid.is_some_and(|uid| uid != existing_uid) || group_differs {
                return Err(AccountsError::UserExists {
                    name: name.to_owned(),
                    existing: existing_uid,
                });
            }
            for group in &config.groups {
                self.add_member(group, name)?;
            }
            return Ok(None);
        }
        if let Some(uid) = config.uid
            && let Some(owner) = self.user_by_uid(uid)
        {
            return Err(AccountsError::UidTaken {
                uid,
                name: name.to_owned(),
                owner: owner.name.clone(),
            });
        }
        for group in config.groups.iter().chain(config.group.as_ref()) {
            if self.group(group).is_none() {
                return Err(AccountsError::UnknownGroup {
                    user: name.to_owned(),
                    group: group.clone(),
                });
            }
        }
        let (uid, gid) = match &config.group {
            Some(group) => {
                let gid = self.group(group).map(|g| g.gid).expect("checked above");
                let uid = match config.uid {
                    Some(uid) => uid,
                    None => Self::allocate(name, range, |id| self.uid_free(id))?,
                };
                (uid, gid)
            }
            None => {
                if let Some(existing) = self.group(name) {
                    return Err(AccountsError::GroupExists {
                        name: name.to_owned(),
                        existing: existing.gid,
                    });
                }
                let uid = match config.uid {
                    Some(uid) => uid,
                    // Prefer an id free as both uid and gid, like adduser and sysusers.
                    None => {
                        Self::allocate(name, range, |id| self.uid_free(id) && self.gid_free(id))
                            .or_else(|_| Self::allocate(name, range, |id| self.uid_free(id)))?
                    }
                };
                let gid = if self.gid_free(uid) {
                    uid
                } else {
                    Self::allocate(name, range, |id| self.gid_free(id))?
                };
                self.groups.push(Group {
                    name: name.to_owned(),
                    gid,
                    members: Vec::new(),
                });
                (uid, gid)
            }
        };
        let home = config.home.clone().unwrap_or_else(|| {
            if config.system {
                "/nonexistent".to_owned()
            } else {
                format!("/home/{name}")
            }
        });
        let shell = config
            .shell
            .clone()
            .unwrap_or_else(|| if config.system { NOLOGIN } else { "/bin/sh" }.to_owned());
        let password = match &config.password_hash {
            Some(hash) => hash.clone(),
            // `*` rather than `!`: no password matches, but the account is not locked,
            // so a key-based login (sshd without PAM refuses `!` accounts) works.
            None => "*".to_owned(),
        };
        self.users.push(User {
            name: name.to_owned(),
            uid,
            gid,
            gecos: config.gecos.clone().unwrap_or_default(),
            home: home.clone(),
            shell,
            password,
            expired: false,
        });
        for group in &config.groups {
            self.add_member(group, name)?;
        }
        let home_op = (home != "/nonexistent").then(|| FsOp::CreateDir {
            path: PathBuf::from(&home),
            own: Ownership {
                mode: if config.system { 0o755 } else { 0o700 },
                uid,
                gid,
            },
            update: false,
        });
        Ok(home_op)
    }

    /// Adds an already-complete user entry (used by sysusers), assuming the caller checked
    /// names and ids.
    pub(crate) fn push_user(&mut self, user: User) {
        self.users.push(user);
    }

    /// Applies the recipe's groups, then its users. Returns the home directories to create.
    pub fn apply_config(
        &mut self,
        groups: &[GroupConfig],
        users: &[UserConfig],
    ) -> Result<Vec<FsOp>, AccountsError> {
        for group in groups {
            let range = if group.system {
                SYSTEM_IDS
            } else {
                REGULAR_IDS
            };
            self.add_group(&group.name, group.gid, range)?;
        }
        let mut ops = Vec::new();
        for user in users {
            ops.extend(self.add_user(user)?);
        }
        Ok(ops)
    }

    /// Checks that every primary gid exists and that no two entries share a name.
    pub fn validate(&self) -> Result<(), AccountsError> {
        let mut names = BTreeSet::new();
        for user in &self.users {
            if !names.insert(&user.name) {
                return Err(AccountsError::UserExists {
                    name: user.name.clone(),
                    existing: user.uid,
                });
            }
        }
        let mut names = BTreeSet::new();
        for group in &self.groups {
            if !names.insert(&group.name) {
                return Err(AccountsError::GroupExists {
                    name: group.name.clone(),
                    existing: group.gid,
                });
            }
        }
        Ok(())
    }

    /// Renders the four files. `source_date_epoch` fills shadow's "last change" field
    /// (days since 1970), so the output is reproducible.
    pub fn render(&self, source_date_epoch: i64) -> AccountFiles {
        let days = source_date_epoch.max(0) / 86_400;
        let mut files = AccountFiles {
            passwd: String::new(),
            group: String::new(),
            shadow: String::new(),
            gshadow: String::new(),
        };
        for u in &self.users {
            files.passwd.push_str(&format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            ));
            files.shadow.push_str(&format!(
                "{}:{}:{days}:0:99999:7::{}:\n",
                u.name,
                u.password,
                if u.expired { "1" } else { "" }
            ));
        }
        for g in &self.groups {
            let members = g.members.join(",");
            files
                .group
                .push_str(&format!("{}:x:{}:{members}\n", g.name, g.gid));
            files
                .gshadow
                .push_str(&format!("{}:*::{members}\n", g.name));
        }
        files
    }

    /// The file operations writing `/etc/{passwd,group,shadow,gshadow}` (shadow files are
    /// 0640 root:shadow as Debian's `shadowconfig` leaves them).
    pub fn plan_files(&self, source_date_epoch: i64) -> Vec<FsOp> {
        let files = self.render(source_date_epoch);
        let shadow_gid = self.group("shadow").map_or(0, |g| g.gid);
        let public = Ownership::root(0o644);
        let secret = Ownership {
            mode: 0o640,
            uid: 0,
            gid: shadow_gid,
        };
        vec![
            FsOp::WriteFile {
                path: "etc/passwd".into(),
                contents: files.passwd.into_bytes(),
                own: public,
            },
            FsOp::WriteFile {
                path: "etc/group".into(),
                contents: files.group.into_bytes(),
                own: public,
            },
            FsOp::WriteFile {
                path: "etc/shadow".into(),
                contents: files.shadow.into_bytes(),
                own: secret,
            },
            FsOp::WriteFile {
                path: "etc/gshadow".into(),
                contents: files.gshadow.into_bytes(),
                own: secret,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Accounts {
        Accounts::debian_base("/bin/sh")
    }

    #[test]
    fn base_matches_debian_reserved_ids() {
        let a = base();
        a.validate().unwrap();
        let uid = |n: &str| a.user(n).unwrap().uid;
        let gid = |n: &str| a.group(n).unwrap().gid;
        assert_eq!(
            (uid("root"), uid("www-data"), uid("_apt"), uid("nobody")),
            (0, 33, 42, 65534)
        );
        assert_eq!(
            (
                gid("tty"),
                gid("shadow"),
                gid("utmp"),
                gid("staff"),
                gid("users")
            ),
            (5, 42, 43, 50, 100)
        );
        assert_eq!(a.user("sync").unwrap().gid, 65534);
        assert_eq!(a.user("games").unwrap().gid, 60);
        assert_eq!(a.user("man").unwrap().gid, 12);
    }

    #[test]
    fn render_is_debian_shaped() {
        let files = base().render(86_400 * 20_000 + 5);
        assert!(files.passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(
            files
                .passwd
                .contains("www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n")
        );
        assert!(files.shadow.starts_with("root:*:20000:0:99999:7:::\n"));
        assert!(files.group.contains("shadow:x:42:\n"));
        assert!(files.gshadow.contains("nogroup:*::\n"));
    }

    #[test]
    fn users_get_own_group_and_deterministic_ids() {
        let mut a = base();
        let op = a
            .add_user(&UserConfig {
                name: "app".into(),
                groups: vec!["video".into()],
                ..Default::default()
            })
            .unwrap();
        let u = a.user("app").unwrap().clone();
        assert_eq!(
            (u.uid, u.gid, u.password.as_str(), u.home.as_str()),
            (1000, 1000, "*", "/home/app")
        );
        assert_eq!(a.group("video").unwrap().members, vec!["app".to_owned()]);
        assert!(matches!(
            op,
            Some(FsOp::CreateDir {
                own: Ownership {
                    mode: 0o700,
                    uid: 1000,
                    gid: 1000
                },
                ..
            })
        ));
        // `users` (gid 100) is taken, so a system user skips 100 for a matching id pair.
        a.add_user(&UserConfig {
            name: "svc".into(),
            system: true,
            ..Default::default()
        })
        .unwrap();
        let s = a.user("svc").unwrap();
        assert_eq!(
            (s.uid, s.gid, s.password.as_str(), s.shell.as_str()),
            (101, 101, "*", NOLOGIN)
        );
    }

    #[test]
    fn explicit_primary_group_and_uid() {
        let mut a = base();
        a.add_user(&UserConfig {
            name: "web".into(),
            uid: Some(5000),
            group: Some("www-data".into()),
            ..Default::default()
        })
        .unwrap();
        let u = a.user("web").unwrap();
        assert_eq!((u.uid, u.gid), (5000, 33));
        assert!(a.group("web").is_none());
    }

    #[test]
    fn conflicts_are_specific_errors() {
        let mut a = base();
        let err = a
            .add_user(&UserConfig {
                name: "x".into(),
                uid: Some(33),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(err, AccountsError::UidTaken { uid: 33, ref owner, .. } if owner == "www-data")
        );
        let err = a.add_user(&UserConfig {
            name: "x".into(),
            groups: vec!["nope".into()],
            ..Default::default()
        });
        assert!(matches!(err, Err(AccountsError::UnknownGroup { .. })));
        let err = a
            .add_user(&UserConfig {
                name: "Bad".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, AccountsError::InvalidName { .. }));
        let err = a.add_user(&UserConfig {
            name: "x".into(),
            gecos: Some("a:b".into()),
            ..Default::default()
        });
        assert!(matches!(
            err,
            Err(AccountsError::InvalidField { field: "gecos", .. })
        ));
        let err = a.add_user(&UserConfig {
            name: "www-data".into(),
            uid: Some(99),
            ..Default::default()
        });
        assert!(matches!(
            err,
            Err(AccountsError::UserExists { existing: 33, .. })
        ));
        let err = a.add_group("audio", Some(7), SYSTEM_IDS).unwrap_err();
        assert!(matches!(
            err,
            AccountsError::GroupExists { existing: 29, .. }
        ));
        let err = a.add_group("newg", Some(29), SYSTEM_IDS).unwrap_err();
        assert!(matches!(err, AccountsError::GidTaken { gid: 29, .. }));
        // A user whose own group name is taken needs an explicit `group`.
        let err = a
            .add_user(&UserConfig {
                name: "audio".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, AccountsError::GroupExists { .. }));
    }

    #[test]
    fn existing_user_can_gain_groups() {
        let mut a = base();
        a.add_user(&UserConfig {
            name: "www-data".into(),
            groups: vec!["adm".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.group("adm").unwrap().members, vec!["www-data".to_owned()]);
    }

    #[test]
    fn range_exhaustion() {
        let mut a = Accounts::default();
        for id in SYSTEM_IDS.0..=SYSTEM_IDS.1 {
            a.add_group(&format!("g{id}"), Some(id), SYSTEM_IDS)
                .unwrap();
        }
        let err = a.add_group("more", None, SYSTEM_IDS).unwrap_err();
        assert!(matches!(
            err,
            AccountsError::RangeExhausted {
                first: 100,
                last: 999,
                ..
            }
        ));
    }

    #[test]
    fn names_follow_debian_rules() {
        for ok in ["root", "_apt", "www-data", "a1", "samba$"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "Root", "a b", "a:b", &"x".repeat(33)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn plan_files_protects_shadow() {
        let ops = base().plan_files(0);
        let shadow = ops
            .iter()
            .find(|o| matches!(o, FsOp::WriteFile { path, .. } if path.ends_with("shadow")))
            .unwrap();
        assert!(matches!(
            shadow,
            FsOp::WriteFile {
                own: Ownership {
                    mode: 0o640,
                    uid: 0,
                    gid: 42
                },
                ..
            }
        ));
    }
}
