//! What every subcommand shares besides the protocol: logging, signals, output.

pub mod backoff;
pub mod fd_limit;
pub mod http;
pub mod logging;
pub mod output;
pub mod shutdown;
pub mod systemd;

/// What per-address limits count by: the address, or for IPv6 its /64
/// network (one host is routinely given a whole /64, and would otherwise have
/// 2^64 addresses to spread over). IPv4 mapped into IPv6 counts as IPv4.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}
