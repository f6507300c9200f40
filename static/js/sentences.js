// Domain events as sentences a person reads at a glance ("Maria checked in
// at gate A"). Known kinds get a sentence and an icon; any other kind still
// reads well ("Maria: order shipped · order o12 → shipped").

import { count, duration, fmt, humanize, pluralForm } from './util.js';

/** Short labels of event kinds (KPI cards). */
export const KIND_LABELS = {
  'message.sent': 'Messages',
  check_in: 'Check-ins',
  'poll.vote': 'Poll votes',
  'poll.closed': 'Polls closed',
  'question.asked': 'Questions',
  'question.upvoted': 'Upvotes',
  'question.answered': 'Answers',
  reaction: 'Reactions',
  'task.created': 'Tasks created',
  'task.started': 'Tasks started',
  'task.completed': 'Tasks completed',
  'approval.requested': 'Approval requests',
  'approval.approved': 'Approved',
  'approval.rejected': 'Rejected',
};

/** The order of KPI cards: the most watched first, unknown kinds after. */
export const KIND_ORDER = Object.keys(KIND_LABELS);

export const kindLabel = (kind) => KIND_LABELS[kind] ?? humanize(kind);

/**
 * Subject types as nouns for `n` ("chat" -> "chats"): Intl.PluralRules picks
 * the form; Intl has no nouns, so the plural of an arbitrary type is made by
 * the English spelling rules.
 */
export function plural(type, n = 2) {
  const one = humanize(type).toLowerCase();
  return pluralForm(n, { one, other: englishPlural(one) });
}

function englishPlural(noun) {
  if (/(s|x|ch|sh)$/.test(noun)) return `${noun}es`;
  if (/[^aeiou]y$/.test(noun)) return `${noun.slice(0, -1)}ies`;
  return `${noun}s`;
}

/** Icons of event kinds (by the part before the dot), from static/icons.svg. */
const ICONS = {
  message: 'chat',
  check_in: 'ticket',
  poll: 'chart',
  question: 'question',
  reaction: 'sparkle',
  task: 'checkbox',
  approval: 'document',
};

/** The sprite icon of an event kind; 'dot' for kinds without one. */
export function iconOf(kind) {
  return ICONS[String(kind).split('.')[0]] ?? 'dot';
}

const votes = (n) => count(n, { one: 'vote', other: 'votes' });

const quote = (s, max = 80) => {
  const t = String(s ?? '').trim();
  return t.length > max ? `“${t.slice(0, max - 1)}…”` : `“${t}”`;
};

/**
 * The sentence of an event: {text, detail}. `text` names the actor and what
 * they did; `detail` adds secondary facts (may be empty).
 */
export function describe(event) {
  const who = event.actor?.name || event.actor?.id || 'Someone';
  const d = event.data && typeof event.data === 'object' ? event.data : {};
  const subject = event.subject ?? {};
  const chat = subject.type === 'chat' && subject.id ? ` in ${subject.id}` : '';
  switch (event.kind) {
    case 'message.sent':
      return { text: `${who} sent a message${chat}`, detail: d.chars ? `${fmt(d.chars)} characters` : '' };
    case 'reaction':
      return { text: `${who} reacted ${d.emoji ?? ''}${chat}`.replace(/\s+/g, ' '), detail: '' };
    case 'check_in':
      return {
        text: `${who} checked in${d.gate ? ` at gate ${d.gate}` : ''}`,
        detail: d.tier ? `${humanize(d.tier)} ticket` : '',
      };
    case 'poll.vote':
      return { text: `${who} voted${d.option ? ` ${quote(d.option, 40)}` : ''}`, detail: d.question ? `Poll: ${quote(d.question)}` : '' };
    case 'poll.closed':
      return {
        text: `${who} closed a poll${d.winner ? `: ${quote(d.winner, 40)} won` : ''}`,
        detail: [d.question ? quote(d.question) : '', d.votes !== undefined ? votes(d.votes) : ''].filter(Boolean).join(' · '),
      };
    case 'question.asked':
      return { text: `${who} asked a question`, detail: d.text ? quote(d.text, 120) : '' };
    case 'question.upvoted':
      return { text: `${who} upvoted a question`, detail: d.votes !== undefined ? `now ${votes(d.votes)}` : '' };
    case 'question.answered':
      return { text: `${who} answered a question`, detail: d.votes !== undefined ? votes(d.votes) : '' };
    case 'task.created':
      return { text: `${who} created a task${d.title ? ` ${quote(d.title, 60)}` : ''}`, detail: d.priority ? `${humanize(d.priority)} priority` : '' };
    case 'task.started':
      return { text: `${who} started${d.title ? ` ${quote(d.title, 60)}` : ' a task'}`, detail: '' };
    case 'task.completed':
      return { text: `${who} completed${d.title ? ` ${quote(d.title, 60)}` : ' a task'}`, detail: d.duration_s !== undefined ? `took ${duration(d.duration_s)}` : '' };
    case 'approval.requested':
      return {
        text: `${who} requested approval${d.request ? ` for ${quote(d.request, 60)}` : ''}`,
        detail: d.amount !== undefined ? `amount ${fmt(d.amount)}` : '',
      };
    case 'approval.approved':
    case 'approval.rejected': {
      const verb = event.kind.endsWith('approved') ? 'approved' : 'rejected';
      return {
        text: `${who} ${verb}${d.request ? ` ${quote(d.request, 60)}` : ' a request'}`,
        detail: [d.amount !== undefined ? `amount ${fmt(d.amount)}` : '', d.wait_s !== undefined ? `waited ${duration(d.wait_s)}` : ''].filter(Boolean).join(' · '),
      };
    }
    default: {
      const about = subject.type ? `${subject.type} ${subject.id ?? ''}${subject.state ? ` → ${humanize(subject.state).toLowerCase()}` : ''}`.trim() : '';
      return { text: `${who}: ${humanize(event.kind).toLowerCase()}`, detail: about };
    }
  }
}
