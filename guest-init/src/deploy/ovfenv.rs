//! The OVF environment document (`ovf-env.xml`, DSP0243 §11): the deployer's property
//! values as `<Property oe:key="..." oe:value="..."/>` elements of the `PropertySection`.
//!
//! A scanner rather than an XML parser: it finds `Property` start tags (any namespace
//! prefix) and reads their `key` and `value` attributes, decoding the five predefined
//! entities and numeric character references. Comments, CDATA and other elements are
//! skipped. Bounded by the input; never panics.

use super::Properties;

/// Decodes `&amp;` `&lt;` `&gt;` `&quot;` `&apos;` `&#NN;` `&#xNN;`; `None` on anything else.
pub fn decode_entities(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(';')?;
        let name = &after[..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    name.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The attributes of a start tag's body (after the name), as (local name, raw value).
fn attributes(body: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(quote) else {
            break;
        };
        let local = name.rsplit(':').next().unwrap_or(name);
        out.push((local, &after[1..1 + close]));
        rest = &after[close + 2..];
    }
    out
}

/// The properties of an `ovf-env.xml`.
pub fn parse(xml: &str) -> Properties {
    let mut props = Properties::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |e| &comment[e + 3..]);
            continue;
        }
        if let Some(cdata) = rest.strip_prefix("![CDATA[") {
            rest = cdata.find("]]>").map_or("", |e| &cdata[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        let name_end = tag
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(tag.len());
        let name = &tag[..name_end];
        if name.rsplit(':').next() != Some("Property") {
            continue;
        }
        let attrs = attributes(tag[name_end..].trim_end_matches('/'));
        let get = |n: &str| attrs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        if let (Some(k), Some(v)) = (get("key"), get("value"))
            && let (Some(k), Some(v)) = (decode_entities(k), decode_entities(v))
        {
            props.entry(k).or_insert(v);
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="nginx">
  <!-- <Property oe:key="commented" oe:value="x"/> -->
  <PlatformSection><Kind>KVM</Kind></PlatformSection>
  <PropertySection>
    <Property oe:key="jeos.hostname" oe:value="web1"/>
    <Property oe:value="192.0.2.10/24" oe:key="jeos.ipv4.address" />
    <Property oe:key='page.text' oe:value='Fish &amp; chips &#x263A; &lt;b&gt;'/>
  </PropertySection>
</Environment>"#;

    #[test]
    fn reads_properties_in_any_attribute_order() {
        let p = parse(SAMPLE);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p["jeos.hostname"], "web1");
        assert_eq!(p["jeos.ipv4.address"], "192.0.2.10/24");
        assert_eq!(p["page.text"], "Fish & chips \u{263a} <b>");
    }

    #[test]
    fn bad_entities_and_truncation_are_dropped() {
        assert!(parse(r#"<Property oe:key="a" oe:value="&bogus;"/>"#).is_empty());
        assert_eq!(decode_entities("&#1114112;"), None);
        for cut in 0..SAMPLE.len() {
            if SAMPLE.is_char_boundary(cut) {
                let _ = parse(&SAMPLE[..cut]);
            }
        }
    }
}
