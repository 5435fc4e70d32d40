//! The `nats` bench's anchor: the same cluster moving the same messages
//! with no reactor at all. Three publishers each publish a third of the
//! operations as messages of the relay's size and headers (a batch at a
//! time, awaiting every acknowledgement, as the relay does) on a stream of
//! the same replication, while three durable pull consumers each read
//! every message (acknowledging each batch, as the relay does). Messages/s
//! until the last consumer has all: the ceiling the cluster alone sets on
//! this machine for the bench's traffic, measured in the same run.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use tokio_stream::StreamExt;

const PARTIES: usize = 3;
const BATCH: usize = 256;

fn err(what: &str, e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("anchor: {what}: {e}").into()
}

/// The size of a message the relay published on `stream` (one from its
/// middle): the anchor's messages carry payloads of it.
pub(crate) fn sample_payload_len(
    urls: &[String],
    token: &str,
    stream: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    runtime()?.block_on(async {
        let js = connect(urls, token).await?;
        let mut stream = js
            .get_stream(stream)
            .await
            .map_err(|e| err("the relay's stream", e))?;
        let info = stream.info().await.map_err(|e| err("its info", e))?;
        let middle = (info.state.first_sequence + info.state.last_sequence) / 2;
        let message = stream
            .get_raw_message(middle)
            .await
            .map_err(|e| err("a message", e))?;
        Ok(message.payload.len())
    })
}

/// Messages/s for `messages` messages of `payload_len` bytes.
pub(crate) fn run(
    urls: &[String],
    token: &str,
    replicas: usize,
    messages: usize,
    payload_len: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    runtime()?.block_on(async {
        let js = connect(urls, token).await?;
        js.create_stream(stream::Config {
            name: "ANCHOR".into(),
            subjects: vec!["anchor.>".into()],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| err("creating its stream", e))?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for party in 0..PARTIES {
            let js = js.clone();
            let share = messages / PARTIES + usize::from(party < messages % PARTIES);
            tasks.push(tokio::spawn(publish(js, party, share, payload_len)));
        }
        for party in 0..PARTIES {
            tasks.push(tokio::spawn(consume(js.clone(), party, messages)));
        }
        for task in tasks {
            task.await
                .map_err(|e| err("a task", e))?
                .map_err(|e| err("a task", e))?;
        }
        Ok(messages as f64 / start.elapsed().as_secs_f64())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Box<dyn std::error::Error>> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn connect(
    urls: &[String],
    token: &str,
) -> Result<jetstream::Context, Box<dyn std::error::Error>> {
    let urls: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| err("a URL", e))?;
    let client = async_nats::ConnectOptions::new()
        .token(token.into())
        .connect(urls.as_slice())
        .await
        .map_err(|e| err("connecting", e))?;
    Ok(jetstream::new(client))
}

type Done = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn publish(js: jetstream::Context, party: usize, share: usize, payload_len: usize) -> Done {
    let node = format!("{:032x}", party + 1);
    let payload = Bytes::from(vec![0x5a; payload_len]);
    let mut sent = 0;
    while sent < share {
        let mut acks = Vec::with_capacity(BATCH);
        for n in sent..share.min(sent + BATCH) {
            let mut headers = async_nats::HeaderMap::new();
            // The relay's headers, of the relay's lengths: a message id of
            // two hex digests, origin, publisher.
            headers.insert("Nats-Msg-Id", format!("{:064x}-{:064x}", party, n).as_str());
            headers.insert("Reactordb-Origin", node.as_str());
            headers.insert("Reactordb-Publisher", node.as_str());
            let subject = format!("anchor.{:02x}.party{party}doc{}", n % 256, n % 34);
            acks.push(
                js.publish_with_headers(subject, headers, payload.clone())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        sent = share.min(sent + BATCH);
    }
    Ok(())
}

async fn consume(js: jetstream::Context, party: usize, messages: usize) -> Done {
    let stream = js.get_stream("ANCHOR").await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("anchor{party}")),
            ack_policy: jetstream::consumer::AckPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut read = 0;
    while read < messages {
        let mut batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_millis(100))
            .messages()
            .await?;
        let mut last = None;
        while let Some(message) = batch.next().await {
            read += 1;
            last = Some(message?);
        }
        if let Some(last) = last {
            last.ack().await?;
        }
    }
    Ok(())
}
