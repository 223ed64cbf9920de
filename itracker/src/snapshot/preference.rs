//! What a snapshot says of the other PIDs seen from one: the order peer selection walks them in
//! ([`Snapshot::preference`]), built once per PID and shared.

use super::Snapshot;

/// The other PIDs as seen from one PID, in the order peer selection prefers them
/// ([`Snapshot::preference`]).
#[derive(Debug)]
pub struct Preference {
    /// Every other PID: the near ones ([`Snapshot::near`]) first, then the rest. Inside each
    /// part cheapest first, the PIDs whose cost the map does not give after every known one,
    /// index order among equal costs.
    pub order: Box<[u16]>,
    /// The rank key of each PID of `order`: its cost from the PID seen from, or infinity when
    /// the map does not give it (kept here so that a walk reads no row of the cost matrix).
    pub keys: Box<[f32]>,
    /// How many PIDs at the start of `order` are near.
    pub near: usize,
}

impl Snapshot {
    /// The other PIDs in the order selection prefers them from `from` (see [`Preference`]);
    /// built on the first call for `from` (a sort of the row), then shared.
    pub fn preference(&self, from: u16) -> &Preference {
        self.preferences[usize::from(from)].get_or_init(|| {
            let known = |to: u16| self.known_cost(from, to).unwrap_or(f32::INFINITY);
            let mut order: Vec<u16> = (0..self.pids.len() as u16)
                .filter(|&to| to != from)
                .collect();
            // Stable: equal keys keep index order.
            order.sort_by(|&a, &b| {
                (!self.near(from, a))
                    .cmp(&!self.near(from, b))
                    .then(known(a).total_cmp(&known(b)))
            });
            let near = order.partition_point(|&to| self.near(from, to));
            Preference {
                keys: order.iter().map(|&to| known(to)).collect(),
                order: order.into_boxed_slice(),
                near,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use ipnetwork::IpNetwork;

    use super::*;
    use crate::pid::PidId;
    use crate::snapshot::{PidSpec, SnapshotBuilder};

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("test prefix")
    }

    fn key_of(s: &Snapshot, from: u16, to: u16) -> f32 {
        if s.cost_known(from, to) {
            s.cost(from, to)
        } else {
            f32::INFINITY
        }
    }

    /// Selection's walk order: near PIDs first, each part by known cost, unknown costs after
    /// every known one (even when the default cost is cheaper), equal costs in index order.
    #[test]
    fn preference_puts_near_first_then_known_costs_then_unknown() {
        let mut b = SnapshotBuilder::new("v", 1.0);
        let own = b.add_isp("own");
        let other = b.add_isp("other");
        let pid = |b: &mut SnapshotBuilder, name: &str, isp, internal, net_: &str| {
            b.add_pid(PidSpec {
                name: name.into(),
                isp,
                internal,
                prefixes: vec![net(net_)],
            })
        };
        let from = pid(&mut b, "pref-from", own, true, "10.0.0.0/16");
        let near_dear = pid(&mut b, "pref-near-dear", own, true, "10.1.0.0/16");
        let near_cheap = pid(&mut b, "pref-near-cheap", own, true, "10.2.0.0/16");
        let far_unknown = pid(&mut b, "pref-far-unknown", other, true, "10.3.0.0/16");
        let far_tie_a = pid(&mut b, "pref-far-tie-a", other, true, "10.4.0.0/16");
        let far_tie_b = pid(&mut b, "pref-far-tie-b", other, true, "10.5.0.0/16");
        let near_unknown = pid(&mut b, "pref-near-unknown", own, true, "10.6.0.0/16");
        b.set_cost(from, near_dear, 90.0);
        b.set_cost(from, near_cheap, 10.0);
        b.set_cost(from, far_tie_b, 20.0);
        b.set_cost(from, far_tie_a, 20.0);
        let s = b.build().expect("valid map");
        let at = |i: usize| s.index_of(PidId::intern(&s.pids()[i].name)).expect("pid");
        let p = s.preference(at(from));
        let names: Vec<&str> = p.order.iter().map(|&i| &*s.pid(i).name).collect();
        let default = s.len() - 1;
        assert_eq!(p.near, 3, "{names:?}");
        assert_eq!(
            p.order.to_vec(),
            [
                near_cheap,
                near_dear,
                near_unknown,
                far_tie_a,
                far_tie_b,
                far_unknown,
                default
            ]
            .map(&at),
            "{names:?}"
        );
        let keys: Vec<f32> = p.order.iter().map(|&to| key_of(&s, at(from), to)).collect();
        assert_eq!(&*p.keys, &keys[..]);
        assert_eq!(p.keys[5..], [f32::INFINITY, f32::INFINITY]);
        // Built once: the same allocation on the next call.
        assert!(std::ptr::eq(p, s.preference(at(from))));
    }
}
