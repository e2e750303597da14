//! `%` specifiers of `sysusers.d(5)` and `tmpfiles.d(5)`, expanded with what is known when
//! the image is built.
//!
//! | specifier | value at build time |
//! |---|---|
//! | `%a` | `x86-64` |
//! | `%A` `%B` `%M` `%w` `%W` `%o` | `IMAGE_VERSION`, `BUILD_ID`, `IMAGE_ID`, `VERSION_ID`, `VARIANT_ID`, `ID` of the appliance's os-release |
//! | `%H` `%l` | the recipe's host name (and its first label) |
//! | `%T` `%V` | `/tmp`, `/var/tmp` |
//! | `%t` `%S` `%C` `%L` `%E` | `/run`, `/var/lib`, `/var/cache`, `/var/log`, `/etc` (tmpfiles.d only, system instance) |
//! | `%h` `%u` `%U` `%g` `%G` | `/root`, `root`, `0`, `root`, `0` (tmpfiles.d only: it runs as root) |
//! | `%%` | `%` |
//!
//! `%m` (machine id), `%b` (boot id) and `%v` (kernel release of the running machine) only
//! exist on the booted appliance: a line using them is skipped with a note.

/// Which file format the text comes from (tmpfiles.d knows more specifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `sysusers.d`.
    Sysusers,
    /// `tmpfiles.d`.
    Tmpfiles,
}

/// Build-time values of the specifiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Specifiers {
    /// `%H`.
    pub hostname: String,
    /// `%o`: os-release `ID`.
    pub os_id: String,
    /// `%w`: `VERSION_ID`.
    pub version_id: String,
    /// `%W`: `VARIANT_ID`.
    pub variant_id: String,
    /// `%B`: `BUILD_ID`.
    pub build_id: String,
    /// `%M`: `IMAGE_ID`.
    pub image_id: String,
    /// `%A`: `IMAGE_VERSION`.
    pub image_version: String,
}

/// Why a text could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecifierError {
    /// The specifier only has a value on the running machine (`%m`, `%b`, `%v`).
    RuntimeOnly(char),
    /// Not a specifier of this format.
    Unknown(char),
    /// A lone `%` at the end.
    Trailing,
}

impl std::fmt::Display for SpecifierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RuntimeOnly(c) => write!(f, "specifier `%{c}` only has a value at run time"),
            Self::Unknown(c) => write!(f, "unknown specifier `%{c}`"),
            Self::Trailing => f.write_str("a lone `%` at the end"),
        }
    }
}

impl Specifiers {
    fn value(&self, c: char, flavour: Flavour) -> Result<String, SpecifierError> {
        let tmpfiles = flavour == Flavour::Tmpfiles;
        Ok(match c {
            '%' => "%".to_owned(),
            'a' => "x86-64".to_owned(),
            'A' => self.image_version.clone(),
            'B' => self.build_id.clone(),
            'M' => self.image_id.clone(),
            'w' => self.version_id.clone(),
            'W' => self.variant_id.clone(),
            'o' => self.os_id.clone(),
            'H' => self.hostname.clone(),
            'l' => self
                .hostname
                .split('.')
                .next()
                .unwrap_or_default()
                .to_owned(),
            'T' => "/tmp".to_owned(),
            'V' => "/var/tmp".to_owned(),
            't' if tmpfiles => "/run".to_owned(),
            'S' if tmpfiles => "/var/lib".to_owned(),
            'C' if tmpfiles => "/var/cache".to_owned(),
            'L' if tmpfiles => "/var/log".to_owned(),
            'E' if tmpfiles => "/etc".to_owned(),
            'h' if tmpfiles => "/root".to_owned(),
            'u' | 'g' if tmpfiles => "root".to_owned(),
            'U' | 'G' if tmpfiles => "0".to_owned(),
            'm' | 'b' | 'v' => return Err(SpecifierError::RuntimeOnly(c)),
            other => return Err(SpecifierError::Unknown(other)),
        })
    }

    /// Expands every specifier of `text`.
    pub fn expand(&self, text: &str, flavour: Flavour) -> Result<String, SpecifierError> {
        if !text.contains('%') {
            return Ok(text.to_owned());
        }
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                let next = chars.next().ok_or(SpecifierError::Trailing)?;
                out.push_str(&self.value(next, flavour)?);
            } else {
                out.push(c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Specifiers {
        Specifiers {
            hostname: "db.example.org".into(),
            os_id: "jeos-db".into(),
            version_id: "1.0".into(),
            ..Specifiers::default()
        }
    }

    #[test]
    fn expands_build_time_values() {
        let s = specs();
        assert_eq!(
            s.expand("%t/%H-%l/%o_%w %% %a", Flavour::Tmpfiles).unwrap(),
            "/run/db.example.org-db/jeos-db_1.0 % x86-64"
        );
        assert_eq!(
            s.expand("%S %C %L %E %T %V %h %u %U %g %G", Flavour::Tmpfiles)
                .unwrap(),
            "/var/lib /var/cache /var/log /etc /tmp /var/tmp /root root 0 root 0"
        );
        assert_eq!(s.expand("plain", Flavour::Sysusers).unwrap(), "plain");
    }

    #[test]
    fn rejects_runtime_unknown_and_trailing() {
        let s = specs();
        assert_eq!(
            s.expand("/var/log/%m", Flavour::Tmpfiles),
            Err(SpecifierError::RuntimeOnly('m'))
        );
        assert_eq!(
            s.expand("%b", Flavour::Sysusers),
            Err(SpecifierError::RuntimeOnly('b'))
        );
        // %t is tmpfiles.d only.
        assert_eq!(
            s.expand("%t", Flavour::Sysusers),
            Err(SpecifierError::Unknown('t'))
        );
        assert_eq!(
            s.expand("%q", Flavour::Tmpfiles),
            Err(SpecifierError::Unknown('q'))
        );
        assert_eq!(
            s.expand("50%", Flavour::Tmpfiles),
            Err(SpecifierError::Trailing)
        );
    }
}
