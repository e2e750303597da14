//! cloud-init NoCloud seeds: `meta-data` (`local-hostname`, `instance-id`; other
//! top-level scalars are taken as appliance properties) and `network-config` version 2
//! (the first `ethernets` entry: `addresses`, `gateway4`/`gateway6` or default `routes`,
//! `nameservers.addresses`; `dhcp4: true` leaves DHCP on). Everything is reduced to the
//! well-known property keys of [`super::keys`].

use super::yaml::{self, Value};
use super::{Properties, keys};

/// meta-data keys cloud-init defines; not appliance properties.
const CLOUD_INIT_KEYS: [&str; 6] = [
    "instance-id",
    "local-hostname",
    "hostname",
    "network-interfaces",
    "public-keys",
    "dsmode",
];

/// The properties of a seed; the strings are problems worth logging.
pub fn parse(meta_data: Option<&str>, network_config: Option<&str>) -> (Properties, Vec<String>) {
    let mut props = Properties::new();
    let mut problems = Vec::new();
    if let Some(text) = meta_data {
        match yaml::parse(text) {
            Ok(Value::Map(entries)) => {
                for (k, v) in &entries {
                    let Some(v) = v.as_str() else { continue };
                    match k.as_str() {
                        "local-hostname" | "hostname" => {
                            props
                                .entry(keys::HOSTNAME.to_owned())
                                .or_insert(v.to_owned());
                        }
                        k if CLOUD_INIT_KEYS.contains(&k) => {}
                        k => {
                            props.insert(k.to_owned(), v.to_owned());
                        }
                    }
                }
            }
            Ok(_) => problems.push("meta-data: not a mapping".to_owned()),
            Err(e) => problems.push(format!("meta-data: {e}")),
        }
    }
    if let Some(text) = network_config {
        match yaml::parse(text) {
            Ok(doc) => network_v2(&doc, &mut props, &mut problems),
            Err(e) => problems.push(format!("network-config: {e}")),
        }
    }
    (props, problems)
}

fn network_v2(doc: &Value, props: &mut Properties, problems: &mut Vec<String>) {
    // cloud-init also accepts the v2 document under a top-level `network:` key.
    let doc = doc.get("network").unwrap_or(doc);
    if doc.get("version").and_then(Value::as_str) != Some("2") {
        problems.push("network-config: only version 2 is supported".to_owned());
        return;
    }
    let Some(Value::Map(ethernets)) = doc.get("ethernets") else {
        return;
    };
    let Some((_, eth)) = ethernets.first() else {
        return;
    };
    if ethernets.len() > 1 {
        problems.push("network-config: only the first `ethernets` entry is applied".to_owned());
    }
    let mut v4 = None;
    let mut v6 = None;
    for a in eth.get("addresses").map(Value::items).unwrap_or_default() {
        let Some(a) = a.as_str() else { continue };
        if a.contains(':') {
            v6.get_or_insert_with(|| a.to_owned());
        } else {
            v4.get_or_insert_with(|| a.to_owned());
        }
    }
    let mut set = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            props.insert(key.to_owned(), v);
        }
    };
    let scalar = |k: &str| eth.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut gw4 = scalar("gateway4");
    let mut gw6 = scalar("gateway6");
    for route in eth.get("routes").map(Value::items).unwrap_or_default() {
        let to = route.get("to").and_then(Value::as_str).unwrap_or_default();
        let Some(via) = route.get("via").and_then(Value::as_str) else {
            continue;
        };
        match to {
            "default" if via.contains(':') => gw6 = gw6.or(Some(via.to_owned())),
            "default" | "0.0.0.0/0" => gw4 = gw4.or(Some(via.to_owned())),
            "::/0" => gw6 = gw6.or(Some(via.to_owned())),
            _ => {}
        }
    }
    set(keys::IPV4_ADDRESS, v4);
    set(keys::IPV6_ADDRESS, v6);
    set(keys::IPV4_GATEWAY, gw4);
    set(keys::IPV6_GATEWAY, gw6);
    let dns: Vec<&str> = eth
        .get("nameservers")
        .and_then(|n| n.get("addresses"))
        .map(Value::items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    if !dns.is_empty() {
        set(keys::DNS, Some(dns.join(",")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const NETWORK: &str = "version: 2\nethernets:\n  id0:\n    match:\n      name: \"e*\"\n    addresses: [192.0.2.20/24, \"2001:db8::20/64\"]\n    routes:\n      - to: default\n        via: 192.0.2.1\n      - to: \"::/0\"\n        via: \"2001:db8::1\"\n    nameservers:\n      addresses: [192.0.2.53]\n";

    #[test]
    fn seed_becomes_properties() {
        let (p, problems) = parse(
            Some("instance-id: i-1\nlocal-hostname: cache1\npage.text: from NoCloud\n"),
            Some(NETWORK),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p[keys::HOSTNAME], "cache1");
        assert_eq!(p["page.text"], "from NoCloud");
        assert_eq!(p[keys::IPV4_ADDRESS], "192.0.2.20/24");
        assert_eq!(p[keys::IPV6_ADDRESS], "2001:db8::20/64");
        assert_eq!(p[keys::IPV4_GATEWAY], "192.0.2.1");
        assert_eq!(p[keys::IPV6_GATEWAY], "2001:db8::1");
        assert_eq!(p[keys::DNS], "192.0.2.53");
        assert!(!p.contains_key("instance-id"));
    }

    #[test]
    fn other_versions_and_garbage_are_reported() {
        let (p, problems) = parse(Some("- a\n"), Some("version: 1\nconfig: []\n"));
        assert!(p.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
        let (_, problems) = parse(None, Some("network:\n  version: 2\n  ethernets: {}\n"));
        assert!(problems.is_empty(), "{problems:?}");
    }
}
