//! The standalone raylet: `raylet [--num-cpus N] [--object-store-memory BYTES]
//! [--resources name=amount,...] [--session NAME]`. Prints its address, serves until stopped.

use oxray_raylet::{Raylet, RayletConfig};

fn main() {
    let mut config = RayletConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let ok = match flag.as_str() {
            "--num-cpus" => value.parse().map(|v| config.num_cpus = v).is_ok(),
            "--object-store-memory" => value
                .parse()
                .map(|v| config.object_store_memory = v)
                .is_ok(),
            "--session" => {
                config.session = value.clone();
                true
            }
            "--resources" => value.split(',').filter(|s| !s.is_empty()).all(|kv| {
                kv.split_once('=')
                    .and_then(|(k, v)| Some((k.to_owned(), v.parse::<f64>().ok()?)))
                    .map(|r| config.resources.push(r))
                    .is_some()
            }),
            _ => false,
        };
        if !ok {
            eprintln!("raylet: bad argument {flag} {value}");
            std::process::exit(2);
        }
    }
    config.prestart_workers = 0;
    match Raylet::start(config) {
        Ok(mut raylet) => {
            println!("{}", raylet.address());
            raylet.wait();
        }
        Err(e) => {
            eprintln!("raylet: {e}");
            std::process::exit(1);
        }
    }
}
