// Shared by the k6 suites: settings from the environment, the admin session,
// users registered through the gateway, fixtures, and the open-loop options.
// The REST contract is the gateway's /api/v1 (see the repository's API docs).
//
// Environment: BASE_URL (http://127.0.0.1:4000), ADMIN_EMAIL, ADMIN_PASSWORD
// (promoctl's defaults), RATE (arrivals/s), DURATION, WARMUP, USERS, STOCK.
import http from 'k6/http';
import exec from 'k6/execution';
import { check, fail, sleep } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = (__ENV.BASE_URL || 'http://127.0.0.1:4000').replace(/\/+$/, '');
const API = `${BASE}/api/v1`;
const ADMIN_EMAIL = __ENV.ADMIN_EMAIL || 'admin@promo.local';
const ADMIN_PASSWORD = __ENV.ADMIN_PASSWORD || 'admin-password';

// Answers the scenario expects: the system said no, correctly. Same list as
// promoctl's (promoctl/src/load/stats.rs).
const REFUSALS = [
  'SOLD_OUT',
  'LIMIT_EXCEEDED',
  'ALREADY_USED',
  'ALREADY_CANCELLED',
  'INSUFFICIENT_BALANCE',
  'NOT_ACTIVE',
];

// Refusals come as 409 (or 422 NOT_ACTIVE); they must not count in
// http_req_failed. The check in `answered` catches a 409 that is not one.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409, 422));

const refusals = new Counter('refusals');

/// "30s", "1m30s", "500ms" -> seconds.
export function seconds(d) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let m;
  while ((m = re.exec(d)) !== null) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  }
  if (total === 0 && !/^0/.test(d)) fail(`invalid duration ${d}`);
  return total;
}

/// The run's settings; each suite gives its own defaults.
export function settings(defaults) {
  const s = {
    rate: Number(__ENV.RATE || defaults.rate),
    duration: __ENV.DURATION || defaults.duration || '30s',
    warmup: __ENV.WARMUP || defaults.warmup || '5s',
    users: Number(__ENV.USERS || defaults.users || 100),
    stock: __ENV.STOCK ? Number(__ENV.STOCK) : defaults.stock,
  };
  s.warmupArrivals = Math.floor(s.rate * seconds(s.warmup));
  s.planned = s.warmupArrivals + Math.floor(s.rate * seconds(s.duration));
  return s;
}

/// Open loop: a warm-up at the same rate, then the measured `load`
/// scenario. Thresholds look at `load` only, so that setup (argon2 password
/// hashing on registration) and the warm-up do not count.
export function options(s) {
  const arrival = {
    executor: 'constant-arrival-rate',
    rate: s.rate,
    timeUnit: '1s',
    // Enough VUs for 100 ms of latency; more are started up to maxVUs, and
    // arrivals beyond that are dropped_iterations (promoctl's "missed").
    preAllocatedVUs: Math.max(10, Math.ceil(s.rate / 10)),
    maxVUs: Math.max(100, s.rate),
  };
  const scenarios = { load: { ...arrival, duration: s.duration, startTime: s.warmup } };
  if (seconds(s.warmup) > 0) scenarios.warmup = { ...arrival, duration: s.warmup };
  return {
    setupTimeout: '10m',
    scenarios,
    thresholds: {
      'http_req_duration{scenario:load}': ['p(95)<200'],
      'http_req_failed{scenario:load}': ['rate<0.01'],
      'checks{scenario:load}': ['rate>0.99'],
      dropped_iterations: [`count<${Math.max(1, Math.floor(s.planned * 0.01))}`],
    },
  };
}

/// The index of this arrival in the whole run, warm-up first, so that the
/// measured window does not repeat the warm-up's work.
export function arrival(s) {
  const i = exec.scenario.iterationInTest;
  return exec.scenario.name === 'load' ? s.warmupArrivals + i : i;
}

function params(token, name) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return name ? { headers, tags: { name } } : { headers };
}

/// A request of the run: the body is checked to be a success or a refusal.
export function post(path, body, token, name) {
  const res = http.post(`${API}${path}`, JSON.stringify(body), params(token, name));
  answered(res);
  return res;
}

function answered(res) {
  if (res.status === 409 || res.status === 422) {
    let code;
    try {
      code = res.json('error.code');
    } catch (_) {
      code = undefined;
    }
    const ok = REFUSALS.includes(code);
    if (ok) refusals.add(1);
    check(res, { 'success or business refusal': () => ok });
  } else {
    check(res, { 'success or business refusal': (r) => r.status >= 200 && r.status < 300 });
  }
}

/// A setup call: waits out the gateway's auth rate limit, fails on anything
/// else that is not a success.
function setupCall(method, path, body, token) {
  for (let attempt = 0; attempt < 60; attempt++) {
    const res = http.request(method, `${API}${path}`, body && JSON.stringify(body), params(token));
    if (res.status === 429) {
      sleep(Number(res.headers['Retry-After'] || 1));
      continue;
    }
    if (res.status < 200 || res.status > 299) {
      fail(`setup: ${method} ${path}: ${res.status} ${res.body}`);
    }
    return res.json();
  }
  return fail(`setup: ${method} ${path}: still rate limited`);
}

function login(email, password) {
  return setupCall('POST', '/auth/login', { email, password }).access_token;
}

/// The admin's token and `s.users` registered users: [{id, token}].
export function sessions(s) {
  const admin = login(ADMIN_EMAIL, ADMIN_PASSWORD);
  const run = Date.now().toString(36);
  const users = [];
  for (let i = 0; i < s.users; i++) {
    const email = `k6-${run}-${i}@load.promo.local`;
    const u = setupCall('POST', '/auth/register', { email, password: 'load-password', name: 'k6' });
    users.push({ id: u.id, token: login(email, 'load-password') });
  }
  return { admin, users };
}

// As promoctl: enough per-user allowance that the limit is not what is measured.
function perUser(s) {
  return Math.min(1000, Math.floor(s.planned / s.users) + 2);
}

export function createPolicy(s, admin) {
  const now = Date.now();
  return setupCall(
    'POST',
    '/coupon-policies',
    {
      name: 'k6 policy',
      discount_type: 'PERCENTAGE',
      discount_value: 10,
      max_discount_amount: 5000,
      total_quantity: s.stock || Math.max(100, s.planned * 2),
      per_user_limit: perUser(s),
      valid_from: new Date(now - 60e3).toISOString(),
      valid_until: new Date(now + 86400e3).toISOString(),
    },
    admin,
  ).id;
}

export function createSale(s, admin) {
  const now = Date.now();
  const product = setupCall('POST', '/products', { name: 'k6 product', price: 10000 }, admin);
  return setupCall(
    'POST',
    '/time-sales',
    {
      product_id: product.id,
      total_quantity: s.stock || 1000,
      sale_price: 5000,
      per_user_limit: Math.min(10, perUser(s)),
      start_at: new Date(now - 1e3).toISOString(),
      end_at: new Date(now + 3600e3).toISOString(),
    },
    admin,
  ).id;
}

/// `n` coupons issued round-robin to the users: [{id, user}] (user = index).
export function issueCoupons(policy, users, n) {
  const coupons = [];
  for (let start = 0; start < n; start += 50) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + 50); i++) {
      batch.push(['POST', `${API}/coupons/issue`, JSON.stringify({ policy_id: policy }), params(users[i % users.length].token)]);
    }
    http.batch(batch).forEach((res, k) => {
      if (res.status !== 201) fail(`setup: coupon issue: ${res.status} ${res.body}`);
      coupons.push({ id: res.json('id'), user: (start + k) % users.length });
    });
  }
  return coupons;
}

// The requests of the run, one per route, shared by the single suites and full.js.

export function couponIssue(d, i) {
  post('/coupons/issue', { policy_id: d.policy }, d.users[i % d.users.length].token, 'coupons/issue');
}

export function couponUse(d, i) {
  const c = d.coupons[i % d.coupons.length];
  post(`/coupons/${c.id}/use`, { order_id: `k6-${i}`, order_amount: 20000 }, d.users[c.user].token, 'coupons/use');
}

/// Pairs: an earn for a user (as the admin), then that user spends most of it.
export function point(d, i) {
  const u = d.users[Math.floor(i / 2) % d.users.length];
  if (i % 2 === 0) {
    post('/points/earn', { user_id: u.id, amount: 100 }, d.admin, 'points/earn');
  } else {
    post('/points/use', { amount: 60 }, u.token, 'points/use');
  }
}

export function order(d, i) {
  post(`/time-sales/${d.sale}/orders`, { quantity: 1 }, d.users[i % d.users.length].token, 'time-sales/orders');
}
