//! Sends two orders to a running broker — one whole, one streamed item by
//! item — waits for the broker's answers and prints them.
//!
//! ```text
//! cargo run -p orderly-producer --example send_orders -- [INTAKE [FANOUT]]
//! ```
//!
//! Endpoints come from the arguments, else from `ORDERLY_PRODUCER_INTAKE`
//! and `ORDERLY_PRODUCER_FANOUT`, else `tcp://127.0.0.1:5570` and
//! `tcp://127.0.0.1:5571` (the broker's defaults). Start a broker first:
//! `orderly-broker run --data-dir /tmp/orderly-data`.

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orderly_producer::{Endpoint, Order, Outcome, Producer, ProducerConfig};

const INTAKE_DEFAULT: &str = "tcp://127.0.0.1:5570";
const FANOUT_DEFAULT: &str = "tcp://127.0.0.1:5571";
/// How long to wait for each answer (the producer resends meanwhile).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn endpoint(position: usize, variable: &str, default: &str) -> Result<Endpoint, Box<dyn Error>> {
    let text = std::env::args().nth(position).or_else(|| std::env::var(variable).ok());
    Ok(text.as_deref().unwrap_or(default).parse()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let intake = endpoint(1, "ORDERLY_PRODUCER_INTAKE", INTAKE_DEFAULT)?;
    let fanout = endpoint(2, "ORDERLY_PRODUCER_FANOUT", FANOUT_DEFAULT)?;
    let mut config = ProducerConfig::new("example", intake, fanout);
    config.handshake_timeout = Duration::from_secs(5);
    println!("connecting to intake {} / fanout {} ...", config.intake, config.fanout);
    let mut producer = Producer::connect(config)?;

    // Order ids are unique per producer id: the broker confirms a repeated
    // id again without processing it twice, so each run picks new ones.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    // A whole order: items are any bytes (here JSON), delivered as they are.
    let whole = Order::new(
        format!("example-{run}-whole"),
        vec![br#"{"sku": "A1", "qty": 2}"#.to_vec(), br#"{"sku": "B7", "qty": 1}"#.to_vec()],
    );
    let whole = producer.send(whole)?;

    // A streamed order: each item goes out as soon as it is known.
    let mut stream = producer.begin(format!("example-{run}-streamed"))?;
    for sku in ["C3", "D4", "E5"] {
        let seq = stream.item(format!(r#"{{"sku": "{sku}", "qty": 1}}"#))?;
        println!("streamed item {seq}");
    }
    let streamed = stream.finish()?;

    for receipt in [&whole, &streamed] {
        match receipt.wait(&mut producer, ANSWER_TIMEOUT)? {
            Outcome::Confirmed => println!("order {:?}: confirmed", receipt.order_id()),
            Outcome::Rejected(error) => println!("order {:?}: rejected: {}", receipt.order_id(), error.reason),
        }
    }
    let stats = producer.stats();
    println!(
        "{} orders sent, {} resent, {} confirmed, {} rejected",
        stats.orders_sent, stats.resends, stats.confirmed, stats.rejected
    );
    producer.close(ANSWER_TIMEOUT)?;
    Ok(())
}
