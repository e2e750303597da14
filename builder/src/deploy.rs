//! Deploy-time configuration from the recipe: the properties a platform may set when the
//! appliance is deployed (the recipe's `[[ovf.property]]` plus, unless
//! `[ovf] network-properties = false`, the well-known `jeos.*` network keys), their
//! defaults for guest-init, and the `template-at = "boot"` files guest-init renders.
//!
//! A boot-time file becomes two entries in the image: the template at
//! `/usr/lib/jeos/boot-templates/<path>` (with the recipe's owner and mode, which the
//! rendered file copies) and a symlink at `<path>` to `/run/jeos/files/<path>`, so the
//! rendered file lives on the tmpfs and nothing on the root claims a value it does not hold.

use std::collections::BTreeMap;

use guest_init::config::BootFileConfig;
use guest_init::deploy::keys;

use crate::recipe::{FileContent, FileEntry, OvfProperty, Recipe};
use crate::rootfs::files::{FileConfig, FileContent as RootfsContent};

/// The `jeos.*` network properties as OVF properties (category `Network`).
pub fn network_properties(recipe: &Recipe) -> Vec<OvfProperty> {
    if !recipe.ovf.network_properties {
        return Vec::new();
    }
    let described = [
        (
            keys::HOSTNAME,
            "Host name",
            "The appliance's host name (empty: the recipe's).",
        ),
        (
            keys::IPV4_ADDRESS,
            "IPv4 address",
            "Static IPv4 address with prefix length, e.g. 192.0.2.10/24 (empty: DHCP).",
        ),
        (keys::IPV4_GATEWAY, "IPv4 gateway", "Default IPv4 gateway."),
        (
            keys::IPV6_ADDRESS,
            "IPv6 address",
            "Static IPv6 address with prefix length, e.g. 2001:db8::10/64.",
        ),
        (keys::IPV6_GATEWAY, "IPv6 gateway", "Default IPv6 gateway."),
        (
            keys::DNS,
            "DNS servers",
            "Name servers, separated by commas.",
        ),
    ];
    described
        .iter()
        .map(|(key, label, description)| OvfProperty {
            key: (*key).to_owned(),
            type_: "string".into(),
            value: Some(String::new()),
            label: Some((*label).to_owned()),
            user_configurable: true,
            description: Some((*description).to_owned()),
            password: false,
        })
        .collect()
}

/// Every deploy-time property with its default value, for `init.json`.
pub fn property_defaults(recipe: &Recipe) -> BTreeMap<String, String> {
    recipe
        .ovf
        .properties
        .iter()
        .chain(network_properties(recipe).iter())
        .map(|p| (p.key.clone(), p.value.clone().unwrap_or_default()))
        .collect()
}

/// The boot-time files, for `init.json`.
pub fn boot_files(recipe: &Recipe) -> Vec<BootFileConfig> {
    recipe
        .files
        .iter()
        .filter(|f| matches!(f.content, FileContent::BootTemplate(_)))
        .map(|f| BootFileConfig {
            path: f.path.clone(),
        })
        .collect()
}

/// The two image entries of a boot-time file: its template and the symlink into `/run`.
pub fn boot_file_configs(file: &FileEntry, template: &str) -> [FileConfig; 2] {
    let config = BootFileConfig {
        path: file.path.clone(),
    };
    [
        FileConfig {
            path: config.template_path(),
            content: RootfsContent::Inline(template.as_bytes().to_vec()),
            mode: Some(file.mode),
            owner: Some(file.owner.clone()),
            group: Some(file.group.clone()),
        },
        FileConfig {
            path: file.path.clone(),
            content: RootfsContent::Symlink(config.runtime_path()),
            mode: None,
            owner: None,
            group: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str = r#"
[appliance]
name = "web"
version = "1.0"
[source]
suite = "trixie"
[packages]
install = ["nginx-light"]
[[ovf.property]]
key = "page.text"
default = "Hello"
user-configurable = true
[[file]]
path = "/var/www/html/index.html"
template = "<h1>{{ovf.page.text}}</h1> on {{ovf.jeos.hostname}}"
template-at = "boot"
owner = "www-data"
"#;

    #[test]
    fn boot_files_become_template_and_symlink() {
        let recipe = crate::recipe::parse_str("web.toml", RECIPE, None).expect("valid");
        let defaults = property_defaults(&recipe);
        assert_eq!(defaults["page.text"], "Hello");
        assert_eq!(defaults[keys::IPV4_ADDRESS], "");
        let files = boot_files(&recipe);
        assert_eq!(files[0].path, "/var/www/html/index.html");
        let FileContent::BootTemplate(t) = &recipe.files[0].content else {
            panic!("not a boot template: {:?}", recipe.files[0].content);
        };
        let [template, link] = boot_file_configs(&recipe.files[0], t);
        assert_eq!(
            template.path,
            "/usr/lib/jeos/boot-templates/var/www/html/index.html"
        );
        assert_eq!(template.owner.as_deref(), Some("www-data"));
        assert!(matches!(
            link.content,
            RootfsContent::Symlink(ref target) if target == "/run/jeos/files/var/www/html/index.html"
        ));
    }

    #[test]
    fn unknown_keys_and_other_expressions_are_recipe_errors() {
        for (bad, expect) in [
            ("{{ovf.nope}}", "names no declared OVF property"),
            ("{{appliance.name}}", "only know"),
        ] {
            let text = RECIPE.replace("<h1>{{ovf.page.text}}</h1> on {{ovf.jeos.hostname}}", bad);
            let errs = crate::recipe::parse_str("web.toml", &text, None).unwrap_err();
            let shown = format!("{:?}", errs.errors);
            assert!(shown.contains(expect), "{shown}");
        }
        let text = RECIPE.replace("template-at = \"boot\"", "template-at = \"later\"");
        assert!(crate::recipe::parse_str("web.toml", &text, None).is_err());
        let off = RECIPE.replace(
            "[[ovf.property]]",
            "[ovf]\nnetwork-properties = false\n[[ovf.property]]",
        );
        assert!(crate::recipe::parse_str("web.toml", &off, None).is_err());
    }
}
