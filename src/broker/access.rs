//! Who may subscribe and publish where: rules by TLS client identity.
//!
//! A connection's identity is its client certificate: the subject
//! (`CN=alice,O=Example`, RFC 4514) and each subject alternative name
//! (`DNS:alice.example`, `email:alice@example.com`, `URI:...`, `IP:10.0.0.1`).
//! The first `[[access.identity]]` entry whose `match` pattern fits any of
//! them gives the rules; identities no entry names get `default`; connections
//! without a certificate get `plain` (or `default`). Within rules, a channel
//! may be used when an allow pattern fits it and no deny pattern does: deny
//! wins. Patterns are channel names where `*` stands for any run of bytes.

use serde::Deserialize;

/// What a connection presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's subject, RFC 4514.
    pub subject: String,
    /// Subject alternative names, `TYPE:value`.
    pub names: Vec<String>,
}

impl Identity {
    /// The identity in a client certificate (DER); `None` when it cannot be
    /// read (the TLS handshake has already verified it).
    pub fn from_der(der: &[u8]) -> Option<Identity> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::SubjectAltName;
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut names = Vec::new();
        if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
            for name in san.0 {
                names.push(match name {
                    GeneralName::DnsName(d) => format!("DNS:{}", d.as_str()),
                    GeneralName::Rfc822Name(e) => format!("email:{}", e.as_str()),
                    GeneralName::UniformResourceIdentifier(u) => format!("URI:{}", u.as_str()),
                    GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                        4 | 16 => {
                            let b = ip.as_bytes();
                            let addr: std::net::IpAddr = if b.len() == 4 {
                                <[u8; 4]>::try_from(b).ok()?.into()
                            } else {
                                <[u8; 16]>::try_from(b).ok()?.into()
                            };
                            format!("IP:{addr}")
                        }
                        _ => continue,
                    },
                    _ => continue,
                });
            }
        }
        Some(Identity {
            subject: tbs.subject.to_string(),
            names,
        })
    }

    /// What logs and the monitoring endpoint show: the subject, or the first
    /// alternative name when the subject is empty, control characters
    /// escaped (a name is the certificate holder's text: a newline in it
    /// must not write a log line of its own).
    pub fn shown(&self) -> String {
        let raw = if self.subject.is_empty() {
            self.names.first().map_or("", String::as_str)
        } else {
            &self.subject
        };
        crate::proto::shown(raw.as_bytes())
    }

    fn any(&self, pattern: &str) -> bool {
        std::iter::once(&self.subject)
            .chain(&self.names)
            .any(|n| glob(pattern.as_bytes(), n.as_bytes()))
    }
}

/// Allow and deny patterns for subscribing and publishing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rules {
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub deny_subscribe: Vec<String>,
    #[serde(default)]
    pub deny_publish: Vec<String>,
}

impl Rules {
    pub fn allow_all() -> Rules {
        Rules {
            subscribe: vec!["*".into()],
            publish: vec!["*".into()],
            deny_subscribe: Vec::new(),
            deny_publish: Vec::new(),
        }
    }

    /// Nothing allowed.
    pub fn none() -> Rules {
        Rules {
            subscribe: Vec::new(),
            publish: Vec::new(),
            deny_subscribe: Vec::new(),
            deny_publish: Vec::new(),
        }
    }

    /// Every publish allowed, whatever the channel: nothing to check.
    pub fn allows_every_publish(&self) -> bool {
        self.deny_publish.is_empty() && self.publish.iter().any(|p| p.bytes().all(|b| b == b'*'))
    }

    /// May subscribe to `channel`. `/null` (subscribe to nothing: how a
    /// publisher connects) is always allowed.
    pub fn may_subscribe(&self, channel: &[u8]) -> bool {
        crate::proto::is_null(channel) || decide(&self.subscribe, &self.deny_subscribe, channel)
    }

    pub fn may_publish(&self, channel: &[u8]) -> bool {
        decide(&self.publish, &self.deny_publish, channel)
    }
}

fn decide(allow: &[String], deny: &[String], channel: &[u8]) -> bool {
    !deny.iter().any(|p| glob(p.as_bytes(), channel))
        && allow.iter().any(|p| glob(p.as_bytes(), channel))
}

/// `*` matches any run of bytes (`/` included); everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Plain connections: refused, or their own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plain {
    Refuse,
    Rules(Rules),
}

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Word(String),
            Rules(Rules),
        }
        match Either::deserialize(d)? {
            Either::Word(w) if w == "refuse" => Ok(Plain::Refuse),
            Either::Word(w) => Err(serde::de::Error::custom(format!(
                "plain = {w:?}: expected \"refuse\" or a table of rules"
            ))),
            Either::Rules(r) => Ok(Plain::Rules(r)),
        }
    }
}

/// One identity's rules.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdentityRules {
    /// A pattern for the subject or an alternative name.
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub deny_subscribe: Vec<String>,
    #[serde(default)]
    pub deny_publish: Vec<String>,
}

/// The `[access]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Access {
    /// Identities no entry names (and plain connections, unless `plain`).
    /// Nothing when the table leaves it out: once `[access]` exists, what it
    /// does not grant is denied.
    #[serde(default = "Rules::none")]
    pub default: Rules,
    pub plain: Option<Plain>,
    #[serde(default)]
    pub identity: Vec<IdentityRules>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            default: Rules::allow_all(),
            plain: None,
            identity: Vec::new(),
        }
    }
}

impl Access {
    /// What the default rules give, in words for `--check-config`.
    pub fn default_said(&self) -> &'static str {
        if self.default == Rules::allow_all() {
            "everyone may do everything"
        } else if self.default == Rules::none() {
            "identities no entry names may do nothing"
        } else {
            "identities no entry names get [access.default]"
        }
    }

    /// The rules for a connection with `identity` (`None`: no client
    /// certificate); `None` when such connections are refused.
    pub fn rules_for(&self, identity: Option<&Identity>) -> Option<Rules> {
        let Some(id) = identity else {
            return match &self.plain {
                Some(Plain::Refuse) => None,
                Some(Plain::Rules(r)) => Some(r.clone()),
                None => Some(self.default.clone()),
            };
        };
        Some(
            self.identity
                .iter()
                .find(|e| id.any(&e.pattern))
                .map(|e| Rules {
                    subscribe: e.subscribe.clone(),
                    publish: e.publish.clone(),
                    deny_subscribe: e.deny_subscribe.clone(),
                    deny_publish: e.deny_publish.clone(),
                })
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_of_bytes() {
        assert!(glob(b"*", b""));
        assert!(glob(b"/topic/*", b"/topic/a/b"));
        assert!(!glob(b"/topic/*", b"/queue/a"));
        assert!(glob(b"/topic/*/x", b"/topic/a/b/x"));
        assert!(!glob(b"/topic/*/x", b"/topic/a/b/y"));
        assert!(glob(b"CN=alice*", b"CN=alice,O=Example"));
        assert!(glob(b"/topic/orders", b"/topic/orders"));
        assert!(!glob(b"/topic/orders", b"/topic/orders2"));
        assert!(glob(b"*a*a*", b"banana"));
    }

    #[test]
    fn deny_wins_and_null_is_always_allowed() {
        let r = Rules {
            subscribe: vec!["/topic/*".into()],
            publish: vec!["/topic/*".into()],
            deny_subscribe: vec!["/topic/secret*".into()],
            deny_publish: vec![],
        };
        assert!(r.may_subscribe(b"/topic/news"));
        assert!(!r.may_subscribe(b"/topic/secret/x"));
        assert!(r.may_subscribe(b"/null"));
        assert!(!r.may_publish(b"/queue/jobs"));
    }

    #[test]
    fn the_first_matching_identity_gives_the_rules() {
        let access: Access = toml::from_str(
            r#"
            plain = "refuse"
            [default]
            subscribe = ["/topic/public/*"]
            [[identity]]
            match = "CN=alice*"
            publish = ["*"]
            [[identity]]
            match = "DNS:*.workers.example"
            subscribe = ["/queue/*"]
            "#,
        )
        .unwrap();
        let alice = Identity {
            subject: "CN=alice,O=Example".into(),
            names: vec![],
        };
        let worker = Identity {
            subject: String::new(),
            names: vec!["DNS:w1.workers.example".into()],
        };
        let stranger = Identity {
            subject: "CN=mallory".into(),
            names: vec![],
        };
        assert!(access.rules_for(Some(&alice)).unwrap().may_publish(b"/x"));
        assert!(access
            .rules_for(Some(&worker))
            .unwrap()
            .may_subscribe(b"/queue/jobs"));
        let s = access.rules_for(Some(&stranger)).unwrap();
        assert!(s.may_subscribe(b"/topic/public/a") && !s.may_publish(b"/topic/public/a"));
        assert_eq!(access.rules_for(None), None);
    }

    #[test]
    fn an_identity_is_shown_on_one_line() {
        let forged = Identity {
            subject: String::new(),
            names: vec!["DNS:x\n2026-12-04T00:00:00.000000Z  WARN FORGED".into()],
        };
        assert_eq!(
            forged.shown(),
            "DNS:x\\n2026-12-04T00:00:00.000000Z  WARN FORGED"
        );
    }

    #[test]
    fn an_access_table_without_a_default_grants_nothing_it_does_not_name() {
        let access: Access = toml::from_str(
            r#"
            plain = "refuse"
            [[identity]]
            match = "CN=alice,O=Example"
            subscribe = ["*"]
            publish = ["*"]
            "#,
        )
        .unwrap();
        let stranger = Identity {
            subject: "CN=stranger".into(),
            names: vec![],
        };
        let s = access.rules_for(Some(&stranger)).unwrap();
        assert!(!s.may_subscribe(b"/topic/secret"));
        assert!(!s.may_publish(b"/topic/secret"));
        assert!(s.may_subscribe(b"/null"));
    }
}
