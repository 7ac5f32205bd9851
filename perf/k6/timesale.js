// perf:timesale: orders on one hot sale, open loop at 1,000/s, through its
// sold-out phase (SOLD_OUT is a refusal, not a failure).
//   k6 run perf/k6/timesale.js          (RATE, DURATION, WARMUP, USERS, STOCK)
import { settings, options as open, arrival, sessions, createSale, order } from './lib.js';

const s = settings({ rate: 1000, duration: '30s', warmup: '5s', users: 100, stock: 10000 });
export const options = open(s);

export function setup() {
  const d = sessions(s);
  d.sale = createSale(s, d.admin);
  return d;
}

export default function (d) {
  order(d, arrival(s));
}
