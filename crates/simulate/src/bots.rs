//! Attack actors: each plans its whole event sequence when it starts, registers its ground
//! truth, and queues its events into the generator's time-ordered merge.

use shoplake_events::EventType;
use shoplake_events::time::MICROS_PER_SECOND;

use crate::attack::{AttackKind, Truth};
use crate::generator::Generator;
use crate::network;
use crate::rng::{Draw, hash};

const S: i64 = MICROS_PER_SECOND;

/// A planned event of a bot: its time, type and product.
type Planned = (i64, EventType, usize);

impl Generator {
    /// Starts an attack of `kind` at `t`.
    pub(crate) fn attack(&mut self, kind: AttackKind, t: i64) {
        match kind {
            AttackKind::Ddos => self.ddos(t),
            AttackKind::IpFlood => self.ip_flood(t),
            _ => self.single_user_bot(kind, t),
        }
    }

    fn blank_truth(&self, kind: AttackKind) -> Truth {
        Truth {
            kind,
            user_id: None,
            user_session: None,
            client_ip: None,
            start: String::new(),
            end: String::new(),
            events: 0,
            users: None,
        }
    }

    fn random_product(&mut self) -> usize {
        let (u, v) = (self.rng().unit(), self.rng().unit());
        let c = self.catalog().category(u);
        self.catalog().product_in(c, v)
    }

    /// The kinds driven by one bot user: their timings differ, the bookkeeping does not.
    fn single_user_bot(&mut self, kind: AttackKind, t0: i64) {
        let (user, user_id) = self.fresh_user();
        let h = hash(self.seed(), 40, user);
        let ip = if kind == AttackKind::Crawler {
            network::hosting_ip(h)
        } else {
            network::hosting_ip(h >> 3)
        };
        let agent = if kind == AttackKind::Crawler {
            network::SCRIPTED[3]
        } else {
            network::bot_agent(h >> 7)
        };
        let mut session = self.fresh_session();
        let mut truth = self.blank_truth(kind);
        truth.user_id = Some(user_id);
        if self.network_fields() {
            truth.client_ip = Some(ip.to_string());
        }
        if matches!(kind, AttackKind::Robotic | AttackKind::Crawler) {
            truth.user_session = Some(session.clone());
        }
        let actor = self.register(truth);
        let net = Some((ip, agent));

        // (time, type, product) of every event, planned first; a session flood also says
        // where each of its sessions starts.
        let (plan, sessions) = match kind {
            AttackKind::Burst => (self.plan_burst(t0), Vec::new()),
            AttackKind::Sustained => (self.plan_sustained(t0), Vec::new()),
            AttackKind::Scraper | AttackKind::Crawler => (self.plan_walk(kind, t0), Vec::new()),
            AttackKind::SessionFlood => self.plan_session_flood(t0, &session),
            AttackKind::Robotic => (self.plan_robotic(t0), Vec::new()),
            // Routed to their own planners by `attack`.
            AttackKind::Ddos | AttackKind::IpFlood => (Vec::new(), Vec::new()),
        };
        let mut session_of = sessions.into_iter().peekable();
        for (i, (t, kind, p)) in plan.into_iter().enumerate() {
            if let Some((_, s)) = session_of.next_if(|(at, _)| *at == i) {
                session = s;
            }
            let e = self.event(t, kind, p, user_id, &session, net);
            self.queue(e, actor);
        }
    }

    /// 3–6 bursts of 24–40 events within 3–8 s: at least 11 land in one 10 s window however
    /// the windows fall.
    fn plan_burst(&mut self, t0: i64) -> Vec<Planned> {
        let mut plan = Vec::new();
        let products: Vec<usize> = (0..self.rng().between(1, 3))
            .map(|_| self.random_product())
            .collect();
        let mut t = t0;
        for _ in 0..self.rng().between(3, 6) {
            let n = self.rng().between(24, 40);
            let span = self.rng().between(3, 8) as i64 * S;
            for i in 0..n {
                let at = t + span * i as i64 / n as i64;
                let p = products[i as usize % products.len()];
                let kind = if self.rng().chance(0.4) {
                    EventType::Cart
                } else {
                    EventType::View
                };
                plan.push((at, kind, p));
            }
            t += span + self.rng().between(30, 300) as i64 * S;
        }
        plan
    }

    /// 5–20 minutes at 1.25–3.3 events/s with irregular gaps.
    fn plan_sustained(&mut self, t0: i64) -> Vec<Planned> {
        let mut plan = Vec::new();
        let minutes = self.rng().between(5, 20) as i64;
        let mean_gap = 0.3 + 0.5 * self.rng().unit();
        let mut t = t0;
        let mut p = self.random_product();
        while t < t0 + minutes * 60 * S {
            if self.rng().chance(0.3) {
                p = self.random_product();
            }
            let kind = if self.rng().chance(0.1) {
                EventType::Cart
            } else {
                EventType::View
            };
            plan.push((t, kind, p));
            t += (self.rng().exp1() * mean_gap * S as f64) as i64;
        }
        plan
    }

    /// Walks the catalogue product by product. A scraper takes 40–90 products a minute for
    /// 3–15 minutes; a crawler 20–35 k products at a slower pace.
    fn plan_walk(&mut self, kind: AttackKind, t0: i64) -> Vec<Planned> {
        let mut plan = Vec::new();
        let (count, mean_gap) = if kind == AttackKind::Crawler {
            (self.rng().between(20_000, 35_000), 1.0 + self.rng().unit())
        } else {
            let per_minute = self.rng().between(40, 90) as f64;
            let minutes = self.rng().between(3, 15) as f64;
            ((per_minute * minutes) as u64, 60.0 / per_minute)
        };
        let products = self.catalog().products.len();
        let mut p = self.rng().between(0, products as u64 - 1) as usize;
        let mut t = t0;
        for _ in 0..count {
            plan.push((t, EventType::View, p));
            p = (p + 1) % products;
            let jitter = 0.5 + self.rng().unit();
            t += (mean_gap * jitter * S as f64) as i64;
        }
        plan
    }

    /// 25–60 short sessions within 30–50 minutes, the first the bot's own `session`; with
    /// the plan, the index of each planned event and its session.
    fn plan_session_flood(
        &mut self,
        t0: i64,
        session: &str,
    ) -> (Vec<Planned>, Vec<(usize, String)>) {
        let mut plan = Vec::new();
        let mut sessions = Vec::new();
        let n = self.rng().between(25, 60);
        let span = self.rng().between(30, 50) as i64 * 60 * S;
        for i in 0..n {
            let start = t0 + span * i as i64 / n as i64;
            let s = if i == 0 {
                session.to_owned()
            } else {
                self.fresh_session()
            };
            for k in 0..self.rng().between(1, 3) {
                let p = self.random_product();
                plan.push((
                    start + k as i64 * self.rng().between(2, 20) as i64 * S,
                    EventType::View,
                    p,
                ));
                sessions.push((plan.len() - 1, s.clone()));
            }
        }
        (plan, sessions)
    }

    /// 40–150 views with a constant 4–9 s gap; one gap in twenty is a second off.
    fn plan_robotic(&mut self, t0: i64) -> Vec<Planned> {
        let mut plan = Vec::new();
        let gap = self.rng().between(4, 9) as i64;
        let mut t = t0;
        for _ in 0..self.rng().between(40, 150) {
            let p = self.random_product();
            plan.push((t, EventType::View, p));
            let jitter = if self.rng().chance(0.05) {
                if self.rng().chance(0.5) { 1 } else { -1 }
            } else {
                0
            };
            t += (gap + jitter) * S;
        }
        plan
    }

    /// A wave of many new users from many addresses, at ten times the organic rate or more.
    fn ddos(&mut self, t0: i64) {
        let rate = (10.0 * self.organic_events_per_second(t0)).max(100.0);
        let seconds = self.rng().between(45, 90) as f64;
        let total = (rate * seconds) as u64;
        let span = (seconds * S as f64) as i64;
        let actor = self.register(self.blank_truth(AttackKind::Ddos));
        let mut sent = 0;
        let mut users = 0;
        while sent < total {
            let (user, user_id) = self.fresh_user();
            users += 1;
            let h = hash(self.seed(), 41, user);
            let net = Some((
                network::residential_ip(h),
                network::BROWSERS[(h >> 40) as usize % network::BROWSERS.len()],
            ));
            let session = self.fresh_session();
            let mut t = t0 + (self.rng().unit() * span as f64) as i64;
            for _ in 0..self.rng().between(1, 3) {
                let p = self.random_product();
                let e = self.event(t, EventType::View, p, user_id, &session, net);
                self.queue(e, actor);
                sent += 1;
                t += self.rng().between(0, 5) as i64 * S;
            }
        }
        self.set_users(actor, users);
    }

    /// One address sending 15–30 events/s for 1–3 minutes, rotating through user ids so no
    /// single user looks busy.
    fn ip_flood(&mut self, t0: i64) {
        let h = hash(self.seed(), 42, t0 as u64);
        let ip = network::hosting_ip(h);
        let agent = network::bot_agent(h >> 9);
        let mut truth = self.blank_truth(AttackKind::IpFlood);
        truth.client_ip = Some(ip.to_string());
        let actor = self.register(truth);
        let rate = self.rng().between(15, 30) as f64;
        let seconds = self.rng().between(60, 180) as f64;
        let total = (rate * seconds) as u64;
        let mut users = 0;
        let mut sent = 0;
        let mut t = t0;
        while sent < total {
            let (_, user_id) = self.fresh_user();
            users += 1;
            let session = self.fresh_session();
            for _ in 0..self.rng().between(1, 5) {
                let p = self.random_product();
                let e = self.event(t, EventType::View, p, user_id, &session, Some((ip, agent)));
                self.queue(e, actor);
                sent += 1;
                t += (self.rng().exp1() / rate * S as f64) as i64;
            }
        }
        self.set_users(actor, users);
    }
}
