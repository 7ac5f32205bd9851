// perf:point: earn then use per user, open loop at 1,000/s. Earns are sent
// as the admin (half the rate), so run the gateway with its per-user rate
// limit off or above that (PROMO_GATEWAY__RATE_LIMIT__ENABLED=false).
//   k6 run perf/k6/point.js             (RATE, DURATION, WARMUP, USERS)
import { settings, options as open, arrival, sessions, point } from './lib.js';

const s = settings({ rate: 1000, duration: '30s', warmup: '5s', users: 100 });
export const options = open(s);

export function setup() {
  return sessions(s);
}

export default function (d) {
  point(d, arrival(s));
}
