//! The notification bus: a queue of the adapter's own, bound to the services' exchanges.

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::settings::AmqpSettings;

/// The routing keys oslo.messaging publishes notifications under (`notifications.info`,
/// `notifications.error`, …).
const ROUTING_KEY: &str = "notifications.*";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("AMQP: {what}: {source}")]
    Amqp {
        what: String,
        #[source]
        source: lapin::Error,
    },
    #[error("AMQP: the broker cancelled the consumer")]
    Cancelled,
}

fn amqp(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> BusError {
    let what = what.into();
    move |source| BusError::Amqp { what, source }
}

/// A consumer of the environment's queue.
pub struct Bus {
    // Held so the connection lives as long as the consumer.
    _connection: Connection,
    consumer: Consumer,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

impl Bus {
    /// Connects, declares the queue `calipso-<environment>` (exclusive: it goes with the
    /// connection, and a full read follows every reconnect) and binds it to each exchange.
    pub async fn connect(settings: &AmqpSettings, environment: &str) -> Result<Self, BusError> {
        let connection = Connection::connect(&settings.url, ConnectionProperties::default())
            .await
            .map_err(amqp("connecting"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        let queue = format!("calipso-{environment}");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("declaring queue `{queue}`")))?;
        for exchange in &settings.exchanges {
            // Declared as the services declare it, so whichever starts first makes it.
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: settings.durable,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!(
                    "declaring exchange `{exchange}` (is AMQP.durable as the services have it?)"
                )))?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!("binding to exchange `{exchange}`")))?;
        }
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "calipso".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("consuming"))?;
        Ok(Bus {
            _connection: connection,
            consumer,
        })
    }

    /// The next message.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        match self.consumer.next().await {
            Some(delivery) => delivery.map_err(amqp("receiving")),
            None => Err(BusError::Cancelled),
        }
    }
}

/// Acknowledges a message that was handled.
pub async fn ack(delivery: &Delivery) -> Result<(), BusError> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(drop)
        .map_err(amqp("acknowledging"))
}

/// Drops a message that can never be handled, so it does not come back.
pub async fn reject(delivery: &Delivery) -> Result<(), BusError> {
    delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .map(drop)
        .map_err(amqp("rejecting"))
}
