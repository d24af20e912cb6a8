//! Network counters of a network namespace, from `/proc/<pid>/net/dev`.

/// Counters of one network interface (`/proc/<pid>/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev` (loopback left out).
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let n: Vec<u64> = counters
            .split_whitespace()
            .map(|c| c.parse().unwrap_or(0))
            .collect();
        if name == "lo" || n.len() < 16 {
            continue;
        }
        out.push(Interface {
            name: name.to_owned(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        });
    }
    out
}
