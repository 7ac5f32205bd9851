//! How promod's producers and promoctl's consumers reach Kafka: the brokers
//! plus librdkafka's own security properties, so a managed cluster that
//! requires TLS (`security.protocol=ssl`) or SASL is reached by setting the
//! same names its documentation uses. librdkafka does TLS with OpenSSL (the
//! `ssl` feature); rustls is not an option there.

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// librdkafka's `security.protocol`, `ssl.*` and `sasl.*` properties; unset
/// ones keep librdkafka's defaults (plaintext, the system's CA store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<String>,
    /// A PEM file of the CA certificates that sign the brokers' certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca_location: Option<String>,
    /// A client certificate and key (PEM), for brokers that require mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certificate_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_location: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::text::de_opt_text"
    )]
    pub sasl_username: Option<String>,
    /// Never serialized (nor printed by Debug).
    #[serde(skip_serializing, deserialize_with = "crate::text::de_opt_secret")]
    pub sasl_password: Option<SecretString>,
}

impl KafkaSecurity {
    /// A client config for `brokers` with these properties set; librdkafka
    /// checks their values when the client is created.
    pub fn client(&self, brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers);
        let password = self.sasl_password.as_ref().map(|p| p.expose_secret());
        let props = [
            ("security.protocol", self.security_protocol.as_deref()),
            ("ssl.ca.location", self.ssl_ca_location.as_deref()),
            (
                "ssl.certificate.location",
                self.ssl_certificate_location.as_deref(),
            ),
            ("ssl.key.location", self.ssl_key_location.as_deref()),
            ("sasl.mechanism", self.sasl_mechanism.as_deref()),
            ("sasl.username", self.sasl_username.as_deref()),
            ("sasl.password", password),
        ];
        for (key, value) in props {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                c.set(key, v);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    fn ca_file() -> std::path::PathBuf {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = std::env::temp_dir().join(format!("promo-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, cert.cert.pem()).unwrap();
        path
    }

    fn tls(ca: &str) -> KafkaSecurity {
        KafkaSecurity {
            security_protocol: Some("ssl".into()),
            ssl_ca_location: Some(ca.into()),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn the_build_speaks_tls_and_loads_the_named_ca() {
        let ca = ca_file();
        let ok = tls(ca.to_str().unwrap()).client("127.0.0.1:9");
        // Fails with "OpenSSL not available at build time" without `ssl`.
        ok.create::<BaseProducer>()
            .expect("an ssl client is created");
        let missing = tls("/nonexistent/ca.pem").client("127.0.0.1:9");
        let err = missing
            .create::<BaseProducer>()
            .err()
            .expect("a missing ca fails");
        assert!(err.to_string().contains("ssl.ca.location"), "{err}");
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn a_bad_protocol_is_refused_at_creation_and_secrets_do_not_print() {
        let mut sec = KafkaSecurity {
            security_protocol: Some("tls".into()),
            sasl_password: Some(SecretString::from("hunter2".to_owned())),
            ..KafkaSecurity::default()
        };
        let err = sec.client("127.0.0.1:9").create::<BaseProducer>().err();
        assert!(err
            .expect("tls is no protocol")
            .to_string()
            .contains("security.protocol"));
        assert!(!format!("{sec:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&sec).unwrap().contains("hunter2"));
        sec.security_protocol = Some("sasl_plaintext".into());
        sec.sasl_mechanism = Some("PLAIN".into());
        sec.sasl_username = Some("promo".into());
        sec.client("127.0.0.1:9")
            .create::<BaseProducer>()
            .expect("sasl plain");
    }
}
