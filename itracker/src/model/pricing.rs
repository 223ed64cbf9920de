//! Dynamic link prices, the P4P way.
//!
//! P4P's iTracker prices links so that applications steer traffic away from congested ones: for
//! the "minimise maximum link utilisation" (MLU) objective, the price of link `e` is a dual
//! variable updated by a projected super-gradient step,
//! `p_e <- clamp(p_e + step * (u_e - target), 0, max)`, where `u_e` is the measured utilisation
//! (traffic / capacity) and `target` the network's MLU target. A link above the target gets
//! dearer, one below it cheaper, down to zero. The first measurement starts from the link's
//! default cost. A static cost in the topology always wins over the dynamic price.

use std::collections::HashMap;

use super::parts::{CostDefaults, Link, Pid};

/// Parameters of the price update (the `[pricing]` table of a topology file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Maximum link utilisation the network aims for (0 < target <= 1).
    pub mlu_target: f64,
    /// Price change per unit of utilisation above (or below) the target.
    pub step: f64,
    /// Upper bound of a dynamic price.
    pub max_price: f64,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            mlu_target: 0.8,
            step: 10.0,
            max_price: 1000.0,
        }
    }
}

impl PricingConfig {
    /// One price update for a link whose utilisation was measured at `utilisation`. Prices
    /// are kept to 4 decimal places so that published costs read `4`, not
    /// `3.9999999999999996`.
    pub fn next_price(&self, current: f64, utilisation: f64) -> f64 {
        let p = (current + self.step * (utilisation - self.mlu_target)).clamp(0.0, self.max_price);
        (p * 1e4).round() / 1e4
    }
}

/// One utilisation measurement, naming its link by name or by its (from, to) PIDs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLoad {
    /// Link name, as in the topology file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// PID the link leaves (with `to`, instead of `link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// PID the link enters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Measured traffic / capacity (0 = idle, 1 = full).
    pub utilisation: f64,
}

/// Why a link-load update was rejected (nothing is applied then).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LinkLoadError {
    /// The measurement names no link, or an unknown one.
    #[error("measurement {index}: no link {what}")]
    UnknownLink { index: usize, what: String },
    /// The utilisation is negative or not a number.
    #[error("measurement {index}: utilisation {value} must be a finite number >= 0")]
    BadUtilisation { index: usize, value: f64 },
    /// The new prices would make a p-distance unusable (not finite as `f64` or `f32`).
    #[error("the new prices are refused: {0}")]
    Costs(String),
}

/// Applies utilisation measurements to `links` (of a topology with `pids`): every link named
/// gets one price update, starting from its default cost at the first one. All or nothing: on
/// any error the links are unchanged.
pub fn apply_link_loads(
    pids: &[Pid],
    links: &mut [Link],
    defaults: &CostDefaults,
    pricing: &PricingConfig,
    loads: &[LinkLoad],
) -> Result<(), LinkLoadError> {
    let mut targets = Vec::with_capacity(loads.len());
    let known = LinkIndex::new(pids, links);
    for (index, load) in loads.iter().enumerate() {
        if !(load.utilisation.is_finite() && load.utilisation >= 0.0) {
            return Err(LinkLoadError::BadUtilisation {
                index,
                value: load.utilisation,
            });
        }
        let Some(i) = known.find(load) else {
            let what = match (&load.link, &load.from, &load.to) {
                (Some(name), _, _) => format!("named {name:?}"),
                (None, Some(f), Some(t)) => format!("from {f:?} to {t:?}"),
                _ => "given (set `link`, or `from` and `to`)".to_string(),
            };
            return Err(LinkLoadError::UnknownLink { index, what });
        };
        targets.push((i, load.utilisation));
    }
    for (i, u) in targets {
        let link = &mut links[i];
        let start = link.default_cost(defaults);
        link.price = Some(pricing.next_price(link.price.unwrap_or(start), u));
        link.utilisation = Some(u);
    }
    Ok(())
}

/// Carries dynamic prices (and last utilisations) over from an older version's links to
/// `links`, for every link with the same (from, to) PID names.
pub fn inherit_prices(pids: &[Pid], links: &mut [Link], old_pids: &[Pid], old_links: &[Link]) {
    let old: HashMap<(&str, &str), &Link> = old_links
        .iter()
        .filter(|o| o.price.is_some())
        .map(|o| {
            (
                (old_pids[o.from].name.as_str(), old_pids[o.to].name.as_str()),
                o,
            )
        })
        .collect();
    for link in links.iter_mut() {
        let key = (pids[link.from].name.as_str(), pids[link.to].name.as_str());
        if let Some(o) = old.get(&key) {
            link.price = o.price;
            link.utilisation = o.utilisation;
        }
    }
}

/// Links by name and by (from, to) PID names: a measurement batch names up to thousands of
/// links of a topology that has thousands.
struct LinkIndex<'a> {
    by_name: HashMap<&'a str, usize>,
    by_ends: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> LinkIndex<'a> {
    fn new(pids: &'a [Pid], links: &'a [Link]) -> Self {
        let mut by_name = HashMap::with_capacity(links.len());
        let mut by_ends = HashMap::with_capacity(links.len());
        // The first link of a name wins, as a scan in file order would find it.
        for (i, l) in links.iter().enumerate().rev() {
            by_name.insert(l.name.as_str(), i);
            by_ends.insert((pids[l.from].name.as_str(), pids[l.to].name.as_str()), i);
        }
        LinkIndex { by_name, by_ends }
    }

    fn find(&self, load: &LinkLoad) -> Option<usize> {
        if let Some(name) = &load.link {
            return self.by_name.get(name.as_str()).copied();
        }
        let key = (load.from.as_deref()?, load.to.as_deref()?);
        self.by_ends.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_rises_above_target_and_falls_below_it() {
        let p = PricingConfig::default();
        assert!(p.next_price(5.0, 0.95) > 5.0);
        assert!(p.next_price(5.0, 0.2) < 5.0);
        assert_eq!(p.next_price(0.1, 0.0), 0.0);
        assert_eq!(p.next_price(999.0, 100.0), p.max_price);
    }
}
