//! `/etc/passwd` and `/etc/group` parsing. A static glibc binary cannot use NSS
//! (`getpwnam` would try to dlopen), so we read the files ourselves.

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members.
    pub members: Vec<String>,
}

/// Credentials a service runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups (including `gid`).
    pub groups: Vec<u32>,
    /// Login name, for `USER`/`LOGNAME`.
    pub name: String,
    /// Home directory, for `HOME`.
    pub home: String,
}

/// Why a user or group could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersError {
    /// No such user in `/etc/passwd`.
    UnknownUser {
        /// The name asked for.
        user: String,
    },
    /// No such group in `/etc/group`.
    UnknownGroup {
        /// The name asked for.
        group: String,
    },
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsersError::UnknownUser { user } => write!(f, "unknown user `{user}` in /etc/passwd"),
            UsersError::UnknownGroup { group } => {
                write!(f, "unknown group `{group}` in /etc/group")
            }
        }
    }
}

/// Parses `/etc/passwd` text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group` text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves a user (name or numeric uid) and optional group (name or numeric gid) to
/// credentials. A numeric uid missing from passwd is allowed (gid = uid, home `/`).
pub fn resolve(
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Credentials, UsersError> {
    let user = user.unwrap_or("root");
    let entry = passwd
        .iter()
        .find(|p| p.name == user)
        .or_else(|| {
            let uid: u32 = user.parse().ok()?;
            passwd.iter().find(|p| p.uid == uid)
        })
        .cloned();
    let entry = match (entry, user.parse::<u32>()) {
        (Some(entry), _) => entry,
        (None, Ok(uid)) => PasswdEntry {
            name: user.to_owned(),
            uid,
            gid: uid,
            home: "/".to_owned(),
        },
        (None, Err(_)) if user == "root" => PasswdEntry {
            name: "root".to_owned(),
            uid: 0,
            gid: 0,
            home: "/root".to_owned(),
        },
        (None, Err(_)) => {
            return Err(UsersError::UnknownUser {
                user: user.to_owned(),
            });
        }
    };
    let gid = match group {
        None => entry.gid,
        Some(name) => match groups.iter().find(|g| g.name == name) {
            Some(g) => g.gid,
            None => name.parse().map_err(|_| UsersError::UnknownGroup {
                group: name.to_owned(),
            })?,
        },
    };
    let mut supplementary = vec![gid];
    for g in groups {
        if g.members.contains(&entry.name) && !supplementary.contains(&g.gid) {
            supplementary.push(g.gid);
        }
    }
    Ok(Credentials {
        uid: entry.uid,
        gid,
        groups: supplementary,
        name: entry.name,
        home: entry.home,
    })
}

/// Resolves against the files in the running system.
pub fn resolve_system(user: Option<&str>, group: Option<&str>) -> Result<Credentials, UsersError> {
    let passwd = parse_passwd(&std::fs::read_to_string("/etc/passwd").unwrap_or_default());
    let groups = parse_group(&std::fs::read_to_string("/etc/group").unwrap_or_default());
    resolve(&passwd, &groups, user, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        broken line\nbad:x:nan:1:::\n";
    const GROUP: &str =
        "root:x:0:\nwww-data:x:33:\nadm:x:4:syslog,www-data\nssl-cert:x:110:www-data\n";

    #[test]
    fn parses_and_skips_malformed_lines() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].home, "/var/www");
        let g = parse_group(GROUP);
        assert_eq!(g[2].members, ["syslog", "www-data"]);
    }

    #[test]
    fn resolves_user_with_supplementary_groups() {
        let (p, g) = (parse_passwd(PASSWD), parse_group(GROUP));
        let c = resolve(&p, &g, Some("www-data"), None).expect("known user");
        assert_eq!((c.uid, c.gid), (33, 33));
        assert_eq!(c.groups, [33, 4, 110]);
        let c = resolve(&p, &g, Some("33"), Some("adm")).expect("numeric uid");
        assert_eq!((c.name.as_str(), c.gid), ("www-data", 4));
        let c = resolve(&p, &g, None, None).expect("root default");
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/root"));
        let c = resolve(&[], &[], Some("1000"), Some("1001")).expect("numeric ids");
        assert_eq!((c.uid, c.gid), (1000, 1001));
    }

    #[test]
    fn unknown_names_fail() {
        let (p, g) = (parse_passwd(PASSWD), parse_group(GROUP));
        assert_eq!(
            resolve(&p, &g, Some("nobody"), None),
            Err(UsersError::UnknownUser {
                user: "nobody".into()
            })
        );
        assert_eq!(
            resolve(&p, &g, None, Some("wheel")),
            Err(UsersError::UnknownGroup {
                group: "wheel".into()
            })
        );
    }
}
