//! Deploy-time seeds come from whoever deploys the appliance (ovf-env.xml, NoCloud
//! meta-data / network-config, fw_cfg values, boot templates in recipes): every parser must
//! terminate without panicking on any bytes, and what it extracts must be valid settings.
#![no_main]

use guest_init::deploy::{Settings, nocloud, ovfenv, template, yaml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let props = ovfenv::parse(&text);
    let _ = Settings::from_properties(&props);
    let _ = yaml::parse(&text);
    let (props, _) = nocloud::parse(Some(&text), Some(&text));
    let (settings, _) = Settings::from_properties(&props);
    if let Some(h) = &settings.hostname {
        assert!(guest_init::deploy::is_valid_hostname(h));
    }
    if let Ok(keys) = template::keys(&text) {
        let rendered = template::render(&text, |k| keys.contains(&k).then_some("v"));
        assert!(rendered.is_ok());
    }
});
