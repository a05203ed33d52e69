//! The generator: organic sessions arriving on a diurnal curve, attack actors at scheduled
//! times, and a time-ordered merge of their events.
//!
//! Each session (or attack actor) is planned whole when it starts and its events are put into
//! per-second buckets; a bucket is emitted once no later arrival can add to it. Memory holds
//! only sessions in flight, so output streams in constant memory whatever its size.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use shoplake_events::time::{MICROS_PER_DAY, MICROS_PER_SECOND, format_rfc3339};
use shoplake_events::{Event, EventType, Price};

use crate::attack::{AttackKind, Truth};
use crate::catalog::Catalog;
use crate::network;
use crate::rng::{Draw, hash, unit, uuid};
use crate::{Error, Options};

/// Average events per day in the October 2019 file (42,448,764 / 31).
pub const EVENTS_PER_DAY: u64 = 1_369_315;
/// The store's offset from UTC, in hours.
pub const STORE_UTC_OFFSET_HOURS: i64 = 3;

/// Relative traffic per local hour of day (store time, UTC+3): quiet at night, peak evenings.
const HOURLY: [f64; 24] = [
    0.55, 0.32, 0.2, 0.14, 0.12, 0.14, 0.25, 0.48, 0.78, 0.98, 1.08, 1.12, 1.14, 1.14, 1.14, 1.17,
    1.22, 1.28, 1.34, 1.37, 1.32, 1.18, 0.98, 0.76,
];
/// Relative traffic per local weekday, Monday first.
const WEEKDAY: [f64; 7] = [1.0, 1.0, 0.98, 0.97, 1.02, 1.06, 1.04];

// Session model, calibrated against DESIGN.md section 2 (see the calibration test).
const P_SINGLE: f64 = 0.42;
/// Multi-event sessions: 2 + a mixture of a short and a long geometric tail.
const P_SHORT_TAIL: f64 = 0.7;
const P_SHORT_GEOMETRIC: f64 = 0.25;
const P_LONG_GEOMETRIC: f64 = 0.09;
/// Slightly below 1 / 3.06: a returning pick that is busy falls back to a new user.
const P_NEW_USER: f64 = 0.305;
const BUYER_SHARE: f64 = 0.18;
const BUYER_CART_PURCHASE: f64 = 0.166;
const BUYER_PURCHASE_ONLY: f64 = 0.195;
const BUYER_CART_ONLY: f64 = 0.06;
const OTHER_CART_ONLY: f64 = 0.032;
/// Share of sessions with a cart and no purchase of it, where removals happen.
const REMOVABLE_SESSION_SHARE: f64 = 0.037;
const MEAN_SESSION_EVENTS: f64 = 4.6;
const GAP_MEDIAN_S: f64 = 30.0;
const GAP_SIGMA: f64 = 1.25;
const MAX_GAP_S: f64 = 25.0 * 60.0;
const IDLE_S: i64 = 30 * 60;
const P_STAY_ON_PRODUCT: f64 = 0.35;
const P_SWITCH_CATEGORY: f64 = 0.08;
/// Events per organic session including extras (removals, duplicates): sizes the arrival rate.
const EVENTS_PER_SESSION: f64 = 4.69;

/// A planned event and the actor it belongs to (`ORGANIC` for shoppers).
struct Pending {
    event: Event,
    actor: u32,
}

const ORGANIC: u32 = u32::MAX;

struct ActorState {
    truth: Truth,
    first: Option<i64>,
    last: i64,
}

/// Generates events in `event_time` order; an iterator of [`Event`].
pub struct Generator {
    seed: u64,
    network_fields: bool,
    remove_share: f64,
    rng: Pcg64Mcg,
    catalog: Catalog,
    target: u64,
    emitted: u64,
    base_rate: f64,
    /// The end of the requested range.
    end: i64,
    /// The hour the arrival rate was last paced for.
    paced_hour: i64,
    /// Events queued so far (emitted or waiting in buckets).
    queued: u64,
    /// Expected events of attacks not started yet.
    attack_budget: f64,
    /// The attack kinds' expected sizes, for the budget.
    organic_rate: f64,
    next_arrival: i64,
    pending: BTreeMap<i64, Vec<Pending>>,
    ready: VecDeque<Pending>,
    scheduled: VecDeque<(i64, AttackKind)>,
    next_user: u64,
    busy: HashMap<u64, i64>,
    /// Users that belong to attackers: never picked as returning shoppers.
    bots: HashSet<u64>,
    busy_queue: VecDeque<(i64, u64)>,
    actors: Vec<ActorState>,
    days: u32,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("seed", &self.seed)
            .field("target", &self.target)
            .field("emitted", &self.emitted)
            .finish()
    }
}

fn traffic_weight(t: i64) -> f64 {
    let local = t + STORE_UTC_OFFSET_HOURS * 3600 * MICROS_PER_SECOND;
    let day = local.div_euclid(MICROS_PER_DAY);
    let hour = (local.rem_euclid(MICROS_PER_DAY) / (3600 * MICROS_PER_SECOND)) as usize;
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = (day + 3).rem_euclid(7) as usize;
    HOURLY[hour] * WEEKDAY[weekday]
}

fn mean_weight(start: i64, days: u32) -> f64 {
    let hours = u64::from(days) * 24;
    let sum: f64 = (0..hours)
        .map(|h| {
            traffic_weight(start + h as i64 * 3600 * MICROS_PER_SECOND + 1800 * MICROS_PER_SECOND)
        })
        .sum();
    sum / hours as f64
}

/// What an organic session sets out to do.
#[derive(Clone, Copy, PartialEq)]
enum Intent {
    Browse,
    CartOnly,
    PurchaseOnly,
    CartPurchase,
}

impl Intent {
    /// A buyer's or another user's intent from a uniform draw `u`.
    fn of(buyer: bool, u: f64) -> Intent {
        if buyer {
            if u < BUYER_CART_PURCHASE {
                Intent::CartPurchase
            } else if u < BUYER_CART_PURCHASE + BUYER_PURCHASE_ONLY {
                Intent::PurchaseOnly
            } else if u < BUYER_CART_PURCHASE + BUYER_PURCHASE_ONLY + BUYER_CART_ONLY {
                Intent::CartOnly
            } else {
                Intent::Browse
            }
        } else if u < OTHER_CART_ONLY {
            Intent::CartOnly
        } else {
            Intent::Browse
        }
    }
}

impl Generator {
    /// Plans a run. Fails when the options do not make sense together.
    pub fn new(opts: &Options) -> Result<Generator, Error> {
        opts.validate()?;
        let (days, target) = opts.size();
        let start = opts.start;
        let span_s = f64::from(days) * 86_400.0;
        let mut rng = Pcg64Mcg::seed_from_u64(hash(opts.seed, 0, 0));

        let organic_rate = target as f64 / span_s;
        let mut attacks: Vec<(AttackKind, u32)> = opts.attacks.resolve(days);
        let crawlers = opts.crawlers.unwrap_or((target / 8_000_000) as u32);
        if crawlers > 0 {
            attacks.push((AttackKind::Crawler, crawlers));
        }
        let attack_events: f64 = attacks
            .iter()
            .map(|&(k, n)| k.expected_events(organic_rate) * f64::from(n))
            .sum();
        if attack_events > target as f64 * 0.8 {
            return Err(Error::Options(format!(
                "the requested attacks need about {attack_events:.0} events, more than 80% of \
                 the {target} asked for; ask for more --events or fewer attacks"
            )));
        }
        let organic = target as f64 - attack_events;
        let sessions_per_day = organic / f64::from(days) / EVENTS_PER_SESSION;
        let base_rate = sessions_per_day / 86_400.0 / mean_weight(start, days);

        // Attacks start after the first 20 minutes (the spike detector needs a baseline) and
        // end before the range does.
        let margin = 20 * 60 * MICROS_PER_SECOND;
        let usable = (days as i64 * MICROS_PER_DAY - 3 * margin).max(MICROS_PER_SECOND);
        let mut scheduled: Vec<(i64, AttackKind)> = Vec::new();
        for (kind, n) in attacks {
            for _ in 0..n {
                let at = start + margin + (rng.unit() * usable as f64) as i64;
                scheduled.push((at - at % MICROS_PER_SECOND, kind));
            }
        }
        scheduled.sort();

        let mut g = Generator {
            seed: opts.seed,
            network_fields: opts.network_fields,
            remove_share: opts.remove_share,
            rng,
            catalog: Catalog::new(opts.seed),
            target,
            emitted: 0,
            base_rate,
            end: start + i64::from(days) * MICROS_PER_DAY,
            paced_hour: i64::MIN,
            queued: 0,
            attack_budget: attack_events,
            organic_rate,
            next_arrival: start,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            scheduled: scheduled.into(),
            next_user: 0,
            busy: HashMap::new(),
            bots: HashSet::new(),
            busy_queue: VecDeque::new(),
            actors: Vec::new(),
            days,
        };
        g.advance_arrival();
        Ok(g)
    }

    /// Events the run will produce.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Events produced so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Days of data the run spans.
    pub fn days(&self) -> u32 {
        self.days
    }

    /// The ground truth: one line per injected actor, with what was actually written.
    pub fn truth(&self) -> Vec<Truth> {
        self.actors
            .iter()
            .filter(|a| a.first.is_some())
            .map(|a| {
                let mut t = a.truth.clone();
                t.start = format_rfc3339(a.first.unwrap_or(0));
                t.end = format_rfc3339(a.last);
                t
            })
            .collect()
    }

    /// Paces arrivals hour by hour so the run's events fill the requested range: the rate for
    /// the coming hour is what is left to produce over what is left of the (weighted) range.
    fn pace(&mut self) {
        let hour = self.next_arrival.div_euclid(3600 * MICROS_PER_SECOND);
        if hour == self.paced_hour || self.next_arrival >= self.end {
            return;
        }
        self.paced_hour = hour;
        let left = self.target as f64 - self.queued as f64 - self.attack_budget;
        let mut weighted_seconds = 0.0;
        let mut t = self.next_arrival;
        while t < self.end {
            let step = (self.end - t)
                .min(3600 * MICROS_PER_SECOND - t.rem_euclid(3600 * MICROS_PER_SECOND));
            weighted_seconds += traffic_weight(t) * (step / MICROS_PER_SECOND) as f64;
            t += step;
        }
        if left > 0.0 && weighted_seconds > 0.0 {
            self.base_rate = left / EVENTS_PER_SESSION / weighted_seconds;
        }
    }

    fn advance_arrival(&mut self) {
        self.pace();
        let lambda = self.base_rate * traffic_weight(self.next_arrival);
        let gap_s = self.rng.exp1() / lambda.max(1e-9);
        self.next_arrival += ((gap_s * MICROS_PER_SECOND as f64) as i64).max(1);
    }

    fn push(&mut self, event: Event, actor: u32) {
        let second = event.event_time.div_euclid(MICROS_PER_SECOND);
        self.queued += 1;
        self.pending
            .entry(second)
            .or_default()
            .push(Pending { event, actor });
    }

    fn emit(&mut self, p: Pending) -> Event {
        self.emitted += 1;
        if p.actor != ORGANIC
            && let Some(a) = self.actors.get_mut(p.actor as usize)
        {
            a.first.get_or_insert(p.event.event_time);
            a.last = p.event.event_time;
            a.truth.events += 1;
        }
        p.event
    }

    fn step(&mut self) -> Option<Event> {
        if self.emitted >= self.target {
            return None;
        }
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(self.emit(p));
            }
            let attack_at = self.scheduled.front().map_or(i64::MAX, |s| s.0);
            let arrival = self.next_arrival.min(attack_at);
            let arrival_second = arrival.div_euclid(MICROS_PER_SECOND);
            if let Some(entry) = self.pending.first_entry()
                && *entry.key() < arrival_second
            {
                self.ready = entry.remove().into();
                continue;
            }
            if attack_at <= self.next_arrival {
                if let Some((at, kind)) = self.scheduled.pop_front() {
                    self.attack_budget -= kind.expected_events(self.organic_rate);
                    self.attack(kind, at);
                }
            } else {
                let at = self.next_arrival;
                self.organic_session(at);
                self.advance_arrival();
            }
        }
    }

    // ---- users -------------------------------------------------------------------------

    fn user_id(&self, user: u64) -> i64 {
        510_000_000 + (user as i64) * 7 + (hash(self.seed, 30, user) % 7) as i64
    }

    fn new_user(&mut self) -> u64 {
        let u = self.next_user;
        self.next_user += 1;
        u
    }

    /// A shopper for a session starting at `t`: new, or a returning one who is not in the
    /// middle of (or within 30 idle minutes of) another session.
    fn pick_user(&mut self, t: i64) -> u64 {
        while let Some(&(until, user)) = self.busy_queue.front() {
            if until > t {
                break;
            }
            self.busy_queue.pop_front();
            if self.busy.get(&user) == Some(&until) {
                self.busy.remove(&user);
            }
        }
        if self.next_user > 0 && !self.rng.chance(P_NEW_USER) {
            for _ in 0..4 {
                let u = (self.next_user as f64 * self.rng.unit().sqrt()) as u64;
                let u = u.min(self.next_user - 1);
                if self.busy.get(&u).is_none_or(|&until| until <= t) && !self.bots.contains(&u) {
                    return u;
                }
            }
        }
        self.new_user()
    }

    fn mark_busy(&mut self, user: u64, last_event: i64) {
        let until = last_event + IDLE_S * MICROS_PER_SECOND;
        self.busy.insert(user, until);
        self.busy_queue.push_back((until, user));
    }

    fn session_id(&mut self) -> String {
        let (hi, lo) = (self.rng.next_u64_(), self.rng.next_u64_());
        uuid(hi, lo)
    }

    // ---- events ------------------------------------------------------------------------

    pub(crate) fn event(
        &self,
        t: i64,
        event_type: EventType,
        product: usize,
        user_id: i64,
        session: &str,
        net: Option<(IpAddr, &str)>,
    ) -> Event {
        let p = &self.catalog.products[product];
        let c = &self.catalog.categories[p.category];
        let (client_ip, user_agent) = match net {
            Some((ip, ua)) if self.network_fields => (Some(ip), Some(ua.to_owned())),
            _ => (None, None),
        };
        Event {
            event_time: t - t.rem_euclid(MICROS_PER_SECOND),
            event_type,
            product_id: p.id,
            category_id: c.id,
            category_code: c.code.clone(),
            brand: p.brand.map(|b| self.catalog.brands[b].clone()),
            price: Price::from_cents(p.price_cents),
            user_id,
            user_session: Some(session.to_owned()),
            client_ip,
            user_agent,
            ingest_time: None,
        }
    }

    fn organic_net(&self, user: u64) -> Option<(IpAddr, &'static str)> {
        self.network_fields.then(|| {
            (
                network::organic_ip(self.seed, user),
                network::organic_agent(self.seed, user),
            )
        })
    }

    /// Plans one shopper's session starting at `t0` and queues its events.
    fn organic_session(&mut self, t0: i64) {
        let user = self.pick_user(t0);
        let user_id = self.user_id(user);
        let buyer = unit(hash(self.seed, 31, user)) < BUYER_SHARE;
        let intent = Intent::of(buyer, self.rng.unit());
        let carts = match intent {
            Intent::CartOnly | Intent::CartPurchase => 1 + self.rng.geometric(0.66) as usize,
            _ => 0,
        };
        let purchases = match intent {
            Intent::PurchaseOnly | Intent::CartPurchase => 1 + self.rng.geometric(0.8) as usize,
            _ => 0,
        };
        let len = if self.rng.chance(P_SINGLE) {
            1
        } else if self.rng.chance(P_SHORT_TAIL) {
            2 + self.rng.geometric(P_SHORT_GEOMETRIC) as usize
        } else {
            2 + self.rng.geometric(P_LONG_GEOMETRIC) as usize
        };
        let len = len.max(carts + purchases);
        let mut path = self.browsing_path(len);
        let mut kinds = vec![EventType::View; len];
        // Purchases close the session; each buys something seen earlier (or, for a
        // one-event session, the product itself).
        let first_purchase = len - purchases;
        for slot in first_purchase..len {
            kinds[slot] = EventType::Purchase;
            if first_purchase > 0 {
                path[slot] = path[self.rng.between(0, first_purchase as u64 - 1) as usize];
            }
        }
        let carted = self.place_carts(&mut kinds, &mut path, first_purchase, carts, intent);
        self.insert_removals(&mut kinds, &mut path, first_purchase, &carted);
        self.queue_session(t0, user, user_id, &kinds, &path);
    }

    /// The browsing path: products visited, with revisits and the odd change of category.
    fn browsing_path(&mut self, len: usize) -> Vec<usize> {
        let mut category = self.catalog.category(self.rng.unit());
        let mut product = self.catalog.product_in(category, self.rng.unit());
        let mut path = Vec::with_capacity(len);
        for i in 0..len {
            if i > 0 && !self.rng.chance(P_STAY_ON_PRODUCT) {
                if self.rng.chance(P_SWITCH_CATEGORY) {
                    category = self.catalog.category(self.rng.unit());
                }
                product = self.catalog.product_in(category, self.rng.unit());
            }
            path.push(product);
        }
        path
    }

    /// Carts sit before the purchases; in a buying session the first carts are of the
    /// products bought. Returns the carts' places.
    fn place_carts(
        &mut self,
        kinds: &mut [EventType],
        path: &mut [usize],
        first_purchase: usize,
        carts: usize,
        intent: Intent,
    ) -> Vec<usize> {
        let purchases = path.len() - first_purchase;
        let mut open: Vec<usize> = (0..first_purchase).collect();
        let mut carted = Vec::new();
        for c in 0..carts {
            if open.is_empty() {
                break;
            }
            let at = open.remove(self.rng.between(0, open.len() as u64 - 1) as usize);
            kinds[at] = EventType::Cart;
            if intent == Intent::CartPurchase && c < purchases {
                path[at] = path[first_purchase + c];
            }
            carted.push(at);
        }
        carted
    }

    /// Removals come after the first cart and before any purchase, of a product carted and
    /// not bought.
    fn insert_removals(
        &mut self,
        kinds: &mut Vec<EventType>,
        path: &mut Vec<usize>,
        first_purchase: usize,
        carted: &[usize],
    ) {
        let first_cart = match carted.iter().min() {
            Some(&c) if self.remove_share > 0.0 => c,
            _ => return,
        };
        let bought = &path[first_purchase..];
        let removable: Vec<usize> = carted
            .iter()
            .map(|&c| path[c])
            .filter(|p| !bought.contains(p))
            .collect();
        if removable.is_empty() {
            return;
        }
        let lambda = self.remove_share * MEAN_SESSION_EVENTS / REMOVABLE_SESSION_SHARE;
        let removes = self.rng.poisson(lambda) as usize;
        for end in first_purchase..first_purchase + removes {
            let at = self.rng.between(first_cart as u64 + 1, end as u64) as usize;
            let product = removable[self.rng.between(0, removable.len() as u64 - 1) as usize];
            kinds.insert(at, EventType::RemoveFromCart);
            path.insert(at, product);
        }
    }

    /// Queues a session's events (with their duplicates) at lognormal gaps from `t0`.
    fn queue_session(
        &mut self,
        t0: i64,
        user: u64,
        user_id: i64,
        kinds: &[EventType],
        path: &[usize],
    ) {
        let session = self.session_id();
        let net = self.organic_net(user);
        let mut t = t0;
        for (i, (&kind, &product)) in kinds.iter().zip(path).enumerate() {
            if i > 0 {
                let gap = self.rng.lognormal(GAP_MEDIAN_S, GAP_SIGMA).min(MAX_GAP_S);
                t += (gap * MICROS_PER_SECOND as f64) as i64;
            }
            let e = self.event(t, kind, product, user_id, &session, net);
            let copies = self.duplicates(kind);
            for _ in 0..copies {
                self.push(e.clone(), ORGANIC);
            }
            self.push(e, ORGANIC);
        }
        self.mark_busy(user, t);
    }

    /// Extra exact copies of an organic event: the real data has 0.34 % duplicate rows, in
    /// bursts of up to 78 identical cart events.
    fn duplicates(&mut self, kind: EventType) -> u64 {
        match kind {
            EventType::Cart if self.rng.chance(0.02) => {
                if self.rng.chance(0.01) {
                    self.rng.between(20, 77)
                } else {
                    1 + self.rng.geometric(0.4)
                }
            }
            EventType::Cart => 0,
            _ if self.rng.chance(0.0015) => 1,
            _ => 0,
        }
    }

    // ---- attacks -----------------------------------------------------------------------

    pub(crate) fn register(&mut self, truth: Truth) -> u32 {
        self.actors.push(ActorState {
            truth,
            first: None,
            last: 0,
        });
        (self.actors.len() - 1) as u32
    }

    pub(crate) fn set_users(&mut self, actor: u32, users: u64) {
        if let Some(a) = self.actors.get_mut(actor as usize) {
            a.truth.users = Some(users);
        }
    }

    pub(crate) fn queue(&mut self, event: Event, actor: u32) {
        self.push(event, actor);
    }

    pub(crate) fn rng(&mut self) -> &mut Pcg64Mcg {
        &mut self.rng
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// A new user for an attacker.
    pub(crate) fn fresh_user(&mut self) -> (u64, i64) {
        let u = self.new_user();
        self.bots.insert(u);
        (u, self.user_id(u))
    }

    pub(crate) fn fresh_session(&mut self) -> String {
        self.session_id()
    }

    pub(crate) fn organic_events_per_second(&self, t: i64) -> f64 {
        self.base_rate * traffic_weight(t) * EVENTS_PER_SESSION
    }

    pub(crate) fn network_fields(&self) -> bool {
        self.network_fields
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.step()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.target - self.emitted) as usize;
        (left, Some(left))
    }
}

/// `RngCore::next_u64` under a name that does not clash with `Iterator::next`.
trait NextU64 {
    fn next_u64_(&mut self) -> u64;
}

impl NextU64 for Pcg64Mcg {
    fn next_u64_(&mut self) -> u64 {
        rand::RngCore::next_u64(self)
    }
}
