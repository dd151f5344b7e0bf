//! Creating Kafka clients without leaking credentials: librdkafka's refusal of a property
//! quotes its value (`… ssl.key.password <value>`), and `[kafka.client]` holds passwords.
//! Every client is created through here, so such an error names the property only.

use rdkafka::{
    ClientConfig,
    client::ClientContext,
    config::{FromClientConfig, FromClientConfigAndContext},
    error::KafkaError,
};

/// A client of `config`.
pub fn create<C: FromClientConfig>(config: &ClientConfig) -> Result<C, KafkaError> {
    config.create().map_err(redact)
}

/// A client of `config` with `context`.
pub fn create_with_context<X: ClientContext, C: FromClientConfigAndContext<X>>(
    config: &ClientConfig,
    context: X,
) -> Result<C, KafkaError> {
    config.create_with_context(context).map_err(redact)
}

/// `error` without the value of a refused property.
fn redact(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, key, value) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, hookflow_core::REDACTED)
            };
            KafkaError::ClientConfig(code, description, key, hookflow_core::REDACTED.to_owned())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let mut config = ClientConfig::new();
        config.set("no.such.property", "do-not-print-me");
        let error = create::<BaseProducer>(&config).err().expect("refused");
        let text = error.to_string();
        assert!(text.contains("no.such.property"), "{text}");
        assert!(!text.contains("do-not-print-me"), "{text}");
    }
}
