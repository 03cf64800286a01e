/**
 * Pools sized by the clock. Most pools are busy in working hours and idle at night and on weekends:
 * a fixed `size` is either short in the morning or pure cost at night, and demand sizing (demand.ts)
 * only reacts to a rush once it came. A schedule says ahead of time how many ready hosts to keep
 * when, as Coder's prebuild schedules and EC2's scheduled actions do:
 *
 *   schedule: { timezone: Europe/Berlin, rules: [{ cron: "* 8-18 * * 1-5", size: 10 }] }
 *
 * Each rule is a cron expression of the minutes it holds for (its minute field is `*`: rules are
 * windows of hours and days, so `0 8 * * *` cannot silently mean one minute). The first rule that
 * holds now gives the pool's size; when none does, the pool keeps its own `size`. Demand sizing,
 * when set, grows the pool from there up to demand.max.
 */
import { Cron } from 'croner';
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import type { PoolSchedule } from '../store/schema.js';

const MAX_SCHEDULE_RULES = 50;
/** How far ahead the next change is looked for: a week (and an hour, for DST). */
const LOOKAHEAD_MS = (7 * 24 + 1) * 3600_000;
/** Every time zone's offset is a multiple of 15 minutes, so a local hour starts on one of these. */
const STEP_MS = 15 * 60_000;

export const poolScheduleInput = z
  .object({
    timezone: z.string().min(1).max(64).default('UTC').describe('IANA time zone the rules are read in, e.g. Europe/Berlin'),
    rules: z
      .array(
        z
          .object({
            cron: z.string().min(1).max(200).describe('The minutes the rule holds for, as cron: minute hour day-of-month month day-of-week; the minute field is `*`, e.g. `* 8-18 * * 1-5` (weekdays 08:00-18:59)'),
            size: z.number().int().min(0).max(10_000).describe('Ready hosts to keep while the rule holds'),
          })
          .strict(),
      )
      .min(1)
      .max(MAX_SCHEDULE_RULES),
  })
  .strict();

export type PoolScheduleInput = z.output<typeof poolScheduleInput>;

/** What the schedule asks for at one moment. */
export interface ScheduledSize {
  /** Ready hosts to keep (before demand). */
  size: number;
  /** The rule that holds (0-based), or null: none does and the pool keeps its own size. */
  rule: number | null;
}

export interface ScheduleReading extends ScheduledSize {
  /** When the scheduled size changes next, and to what; null: not within a week. */
  next: { at: Date; size: number; rule: number | null } | null;
}

/** Parsed rules, by time zone and expression: passes read them every second. */
const parsed = new Map<string, Cron>();

function cronOf(timezone: string, expression: string): Cron {
  const key = `${timezone}\n${expression}`;
  let cron = parsed.get(key);
  if (!cron) {
    if (parsed.size >= 1000) parsed.clear();
    cron = new Cron(expression, { timezone, paused: true, mode: '5-part' });
    parsed.set(key, cron);
  }
  return cron;
}

/** Checks what the schema cannot: the time zone exists, each expression parses and names whole minutes. */
export function checkSchedule(pool: string, schedule: PoolScheduleInput): PoolSchedule {
  try {
    new Intl.DateTimeFormat('en', { timeZone: schedule.timezone });
  } catch {
    throw new BerthError('validation_failed', `pool ${pool}: schedule.timezone ${JSON.stringify(schedule.timezone)} is not a time zone`, 'Give an IANA time zone name, e.g. UTC, Europe/Berlin or America/New_York.', { timezone: schedule.timezone });
  }
  const rules = schedule.rules.map((rule, i) => {
    const where = `pool ${pool}: schedule.rules[${i}]`;
    const fields = rule.cron.trim().split(/\s+/);
    const cron = fields.join(' ');
    if (fields.length !== 5) {
      throw new BerthError('validation_failed', `${where}: ${JSON.stringify(rule.cron)} has ${fields.length} fields, not 5`, 'Write minute hour day-of-month month day-of-week, e.g. "* 8-18 * * 1-5" (weekdays 08:00-18:59).', { cron: rule.cron });
    }
    if (fields[0] !== '*') {
      throw new BerthError('validation_failed', `${where}: the minute field of ${JSON.stringify(rule.cron)} is not *`, 'A rule holds for every minute it names: write hours and days, e.g. "* 8-18 * * 1-5" for weekdays 08:00-18:59 ("0 8 * * *" would hold for one minute).', { cron: rule.cron });
    }
    try {
      cronOf(schedule.timezone, cron);
    } catch (err) {
      const reason = err instanceof Error ? err.message.replace(/^CronPattern: /, '') : String(err);
      throw new BerthError('validation_failed', `${where}: ${JSON.stringify(rule.cron)} is not a cron expression: ${reason}`, 'Write minute hour day-of-month month day-of-week, e.g. "* 8-18 * * 1-5" (weekdays 08:00-18:59).', { cron: rule.cron });
    }
    return { cron, size: rule.size };
  });
  return { timezone: schedule.timezone, rules };
}

/** The size the schedule gives at `at` (rules hold for whole minutes). */
export function scheduledSize(baseSize: number, schedule: PoolSchedule | null, at: Date): ScheduledSize {
  if (!schedule) return { size: baseSize, rule: null };
  const minute = new Date(Math.floor(at.getTime() / 60_000) * 60_000);
  for (const [i, rule] of schedule.rules.entries()) {
    if (cronOf(schedule.timezone, rule.cron).match(minute)) return { size: rule.size, rule: i };
  }
  return { size: baseSize, rule: null };
}

/** Readings by pool, kept until the next change (or a minute): a pool list reads every pool's. */
const readings = new Map<string, { key: string; from: number; until: number; reading: ScheduleReading }>();

/** The size now and when it changes next (to show; the reconciler needs only scheduledSize). */
export function readSchedule(poolKey: string, baseSize: number, schedule: PoolSchedule | null, at: Date): ScheduleReading {
  const key = `${baseSize}/${JSON.stringify(schedule)}`;
  const now = at.getTime();
  const kept = readings.get(poolKey);
  if (kept && kept.key === key && kept.from <= now && now < kept.until) return kept.reading;
  const current = scheduledSize(baseSize, schedule, at);
  let next: ScheduleReading['next'] = null;
  if (schedule) {
    // Whether a rule holds changes only where a local hour begins: on a 15-minute step in UTC.
    for (let t = Math.floor(now / STEP_MS) * STEP_MS + STEP_MS; t <= now + LOOKAHEAD_MS; t += STEP_MS) {
      const then = scheduledSize(baseSize, schedule, new Date(t));
      if (then.size !== current.size || then.rule !== current.rule) {
        next = { at: new Date(t), size: then.size, rule: then.rule };
        break;
      }
    }
  }
  const reading = { ...current, next };
  if (readings.size >= 10_000) readings.clear();
  readings.set(poolKey, { key, from: now, until: next ? next.at.getTime() : now + 60_000, reading });
  return reading;
}
