/* jit playground: a Slack stand-in page for `jit demo`.
 *
 * The page polls /api/state and draws what jit sent to "Slack": channels, the person's
 * DMs with jit and the ephemeral answers only they see, the App Home, and any modal jit
 * opened for them. Clicks, commands and modal submissions go back through /api/*.
 *
 * Everything jit (or a person) wrote is put on the page as text nodes and elements built
 * one by one, never as markup: in real life that text is attacker-controlled.
 *
 * The first part (mrkdwn, Block Kit, timelines) is pure and takes the document as an
 * argument, so it runs under node in the tests; the second part is the page itself.
 */
"use strict";

/* ---------------------------------------------------------------- mrkdwn ---------- */

var ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">" };

var EMOJI = {
  alarm_clock: "\u23F0", bell: "\u{1F514}", clock3: "\u{1F552}", computer: "\u{1F4BB}",
  eyes: "\u{1F440}", heavy_check_mark: "\u2714\uFE0F", hourglass: "\u231B",
  hourglass_flowing_sand: "\u23F3", information_source: "\u2139\uFE0F", key: "\u{1F511}",
  lock: "\u{1F512}", no_entry: "\u26D4", no_entry_sign: "\u{1F6AB}", ok: "\u{1F197}",
  rotating_light: "\u{1F6A8}", shield: "\u{1F6E1}\uFE0F", stopwatch: "\u23F1\uFE0F",
  tada: "\u{1F389}", unlock: "\u{1F513}", warning: "\u26A0\uFE0F", wave: "\u{1F44B}",
  white_check_mark: "\u2705", x: "\u274C"
};

var STYLES = { "*": "bold", "_": "italic", "~": "strike" };

function decodeEntities(text) {
  return String(text).replace(/&(?:amp|lt|gt);/g, function (found) { return ENTITIES[found]; });
}

/* One character (charAt's "" past either end is neither). */
function isWordChar(ch) {
  return /^[A-Za-z0-9]$/.test(ch);
}

function isSpace(ch) {
  return /^\s$/.test(ch);
}

/* Text, with known :emoji: shortcodes as their characters. */
function textNodes(raw, decode) {
  var text = decode ? decodeEntities(raw) : String(raw);
  var nodes = [];
  var last = 0;
  text.replace(/:([a-z0-9_+-]+):/g, function (found, name, at) {
    if (!Object.prototype.hasOwnProperty.call(EMOJI, name)) return found;
    if (at > last) nodes.push({ type: "text", text: text.slice(last, at) });
    nodes.push({ type: "emoji", name: name, text: EMOJI[name] });
    last = at + found.length;
    return found;
  });
  if (last < text.length) nodes.push({ type: "text", text: text.slice(last) });
  return nodes;
}

/* Slack's `<...>`: a link, a mention, a channel or a special; null when it is none. */
function angleNode(inner) {
  var bar = inner.indexOf("|");
  var target = bar < 0 ? inner : inner.slice(0, bar);
  var label = bar < 0 ? "" : decodeEntities(inner.slice(bar + 1));
  if (target.charAt(0) === "@") return { type: "user", id: target.slice(1), label: label };
  if (target.charAt(0) === "#") return { type: "channel", id: target.slice(1), label: label };
  if (target.charAt(0) === "!") {
    var name = target.slice(1).split("^")[0];
    if (name === "here" || name === "channel" || name === "everyone") {
      return { type: "broadcast", text: "@" + name };
    }
    return { type: "broadcast", text: label || "@" + name };
  }
  if (/^(?:https?|mailto):[^\s]+$/i.test(target)) {
    var url = decodeEntities(target);
    return { type: "link", url: url, text: label || url };
  }
  return null;
}

/* Where the span opened at `start` by `mark` closes, or -1: code spans and `<...>` are
   skipped, and the closing mark must follow a non-space and not precede a letter. */
function closingMark(line, start, mark) {
  for (var at = start + 2; at < line.length; at += 1) {
    var ch = line.charAt(at);
    if (ch === "`" || ch === "<") {
      var end = line.indexOf(ch === "`" ? "`" : ">", at + 1);
      if (end > at) { at = end; continue; }
    }
    if (ch === mark && !isSpace(line.charAt(at - 1)) && !isWordChar(line.charAt(at + 1))) {
      return at;
    }
  }
  return -1;
}

function opensMark(line, at) {
  var next = line.charAt(at + 1);
  return next !== "" && !isSpace(next) && next !== line.charAt(at) &&
    !isWordChar(line.charAt(at - 1));
}

/* One line of mrkdwn (no line breaks) as nodes. */
function parseInline(line) {
  var nodes = [];
  var plain = "";
  function flush() {
    if (plain) nodes.push.apply(nodes, textNodes(plain, true));
    plain = "";
  }
  var at = 0;
  while (at < line.length) {
    var ch = line.charAt(at);
    var end = -1;
    var node = null;
    if (ch === "`") {
      end = line.indexOf("`", at + 1);
      if (end > at + 1) node = { type: "code", text: decodeEntities(line.slice(at + 1, end)) };
    } else if (ch === "<") {
      end = line.indexOf(">", at + 1);
      if (end > at + 1) node = angleNode(line.slice(at + 1, end));
    } else if (STYLES[ch] && opensMark(line, at)) {
      end = closingMark(line, at, ch);
      if (end > 0) node = { type: STYLES[ch], children: parseInline(line.slice(at + 1, end)) };
    }
    if (node) {
      flush();
      nodes.push(node);
      at = end + 1;
    } else {
      plain += ch;
      at += 1;
    }
  }
  flush();
  return nodes;
}

/* Lines outside ``` fences: quotes (`>` at a line's start) grouped, breaks between. */
function parseLines(text, nodes) {
  var quote = null;
  text.split("\n").forEach(function (line, index) {
    if (line.charAt(0) === ">") {
      if (!quote) {
        quote = { type: "quote", children: [] };
        nodes.push(quote);
      } else {
        quote.children.push({ type: "br" });
      }
      quote.children.push.apply(quote.children, parseInline(line.slice(1)));
      return;
    }
    if (index > 0 && !quote) nodes.push({ type: "br" });
    quote = null;
    nodes.push.apply(nodes, parseInline(line));
  });
}

/* Slack mrkdwn as a tree of nodes: {type: text|emoji|bold|italic|strike|code|pre|quote|
   link|user|channel|broadcast|br, text?, children?, url?, id?, label?}. */
function parseMrkdwn(source) {
  var parts = String(source == null ? "" : source).split("```");
  if (parts.length % 2 === 0) {  // an unclosed fence is text
    var tail = parts.pop();
    parts[parts.length - 1] += "```" + tail;
  }
  var nodes = [];
  parts.forEach(function (part, index) {
    if (index % 2 === 1) {
      nodes.push({ type: "pre", text: decodeEntities(part.replace(/^\n/, "").replace(/\n$/, "")) });
      return;
    }
    var text = part;
    if (index > 0) text = text.replace(/^\n/, "");
    if (index < parts.length - 1) text = text.replace(/\n$/, "");
    if (text) parseLines(text, nodes);
  });
  return nodes;
}

/* ---------------------------------------------------------------- DOM helpers ----- */

/* An element with attributes (`class`, `data-*`, aria ...) and children (nodes or text). */
function h(doc, tag, attrs, children) {
  var node = doc.createElement(tag);
  Object.keys(attrs || {}).forEach(function (name) {
    var value = attrs[name];
    if (value === null || value === undefined || value === false) return;
    node.setAttribute(name, value === true ? "" : String(value));
  });
  (children || []).forEach(function (child) {
    if (child === null || child === undefined) return;
    node.appendChild(typeof child === "string" ? doc.createTextNode(child) : child);
  });
  return node;
}

var INLINE_TAGS = { bold: "strong", italic: "em", strike: "del", quote: "blockquote" };

function nameOf(table, id, fallback) {
  return (table && Object.prototype.hasOwnProperty.call(table, id)) ? table[id] : fallback;
}

function mentionNode(doc, node, ctx) {
  if (node.type === "user") {
    var name = nameOf(ctx.people, node.id, (node.label || node.id).replace(/^@/, ""));
    var mine = ctx.me === node.id;
    return h(doc, "span", { "class": mine ? "mention mention-me" : "mention",
      "data-user": node.id }, ["@" + name]);
  }
  if (node.type === "channel") {
    var channel = nameOf(ctx.channels, node.id, (node.label || node.id).replace(/^#/, ""));
    return h(doc, "span", { "class": "mention channel-ref", "data-channel": node.id },
      ["#" + channel]);
  }
  return h(doc, "span", { "class": "mention" }, [node.text]);
}

function mrkdwnNode(doc, node, ctx) {
  switch (node.type) {
    case "text": return doc.createTextNode(node.text);
    case "br": return doc.createElement("br");
    case "emoji": return h(doc, "span", { "class": "emoji", role: "img", "aria-label": node.name },
      [node.text]);
    case "code": return h(doc, "code", {}, [node.text]);
    case "pre": return h(doc, "pre", { "class": "pre" }, [node.text]);
    case "link": return h(doc, "a", { href: node.url, target: "_blank",
      rel: "noopener noreferrer" }, [node.text]);
    case "user": case "channel": case "broadcast": return mentionNode(doc, node, ctx);
    default: {
      var tag = INLINE_TAGS[node.type] || "span";
      return h(doc, tag, {}, node.children.map(function (c) { return mrkdwnNode(doc, c, ctx); }));
    }
  }
}

function renderMrkdwn(doc, text, ctx) {
  return h(doc, "span", { "class": "mrkdwn" },
    parseMrkdwn(text).map(function (node) { return mrkdwnNode(doc, node, ctx || {}); }));
}

function plainText(obj) {
  return obj && typeof obj.text === "string" ? obj.text : "";
}

/* A text object (mrkdwn or plain_text) as a node. */
function renderText(doc, obj, ctx) {
  if (!obj) return doc.createTextNode("");
  if (obj.type === "mrkdwn") return renderMrkdwn(doc, obj.text, ctx);
  if (obj.emoji === false) return h(doc, "span", {}, [plainText(obj)]);
  return h(doc, "span", {}, textNodes(plainText(obj), false).map(function (n) {
    return mrkdwnNode(doc, n, ctx);
  }));
}

function unsupported(doc, what, type) {
  return h(doc, "div", { "class": "unsupported" },
    ["[unsupported " + what + ": " + String(type || "unknown") + "]"]);
}

/* ---------------------------------------------------------------- Block Kit ------- */

function renderButton(doc, element, block, ctx) {
  var style = element.style === "primary" || element.style === "danger" ? element.style : "";
  var button = h(doc, "button", {
    type: "button", "class": style ? "btn btn-" + style : "btn",
    "data-testid": "button-" + element.action_id,
    "data-value": element.value, "data-focus-key": focusKey(ctx, element)
  }, [plainText(element.text)]);
  button.addEventListener("click", function () {
    var action = { action_id: element.action_id, block_id: block.block_id || "",
      value: element.value === undefined ? "" : element.value };
    if (element.confirm && ctx.confirm) {
      ctx.confirm(element.confirm, function () { ctx.act(action, button); });
    } else {
      ctx.act(action, button);
    }
  });
  return button;
}

function focusKey(ctx, element) {
  var where = ctx.container ? (ctx.container.ts || ctx.container.view_id || "") : "";
  return [where, element.action_id, element.value || ""].join("|");
}

function optionList(element) {
  var options = (element.options || []).slice();
  (element.option_groups || []).forEach(function (group) {
    options.push.apply(options, group.options || []);
  });
  return options;
}

function sameOption(a, b) {
  return !!a && !!b && a.value === b.value;
}

/* A <select> for static_select; its option values are indexes into `options`. */
function selectControl(doc, element, attrs) {
  var options = optionList(element);
  var select = h(doc, "select", attrs);
  var chosen = -1;
  select.appendChild(h(doc, "option", { value: "" },
    [plainText(element.placeholder) || "Choose an option"]));
  options.forEach(function (option, index) {
    if (sameOption(option, element.initial_option)) chosen = index;
    select.appendChild(h(doc, "option", { value: String(index) }, [plainText(option.text)]));
  });
  select.value = chosen < 0 ? "" : String(chosen);
  return { control: select, options: options };
}

function renderSelect(doc, element, block, ctx) {
  var made = selectControl(doc, element, { "class": "select",
    "data-testid": "select-" + element.action_id,
    "aria-label": plainText(element.placeholder) || "Choose an option" });
  made.control.addEventListener("change", function () {
    var option = made.options[Number(made.control.value)];
    if (made.control.value === "" || !option) return;
    ctx.act({ action_id: element.action_id, block_id: block.block_id || "",
      selected_option: option }, made.control);
  });
  return made.control;
}

function renderElement(doc, element, block, ctx) {
  var type = element && element.type;
  if (type === "button") return renderButton(doc, element, block, ctx);
  if (type === "static_select") return renderSelect(doc, element, block, ctx);
  if (type === "image") return imageNode(doc, element);
  return unsupported(doc, "element", type);
}

/* Images are not fetched (the playground stays offline): their alt text stands in. */
function imageNode(doc, element) {
  return h(doc, "span", { "class": "image-alt", title: element.image_url || "" },
    ["[image: " + (element.alt_text || "") + "]"]);
}

function renderSection(doc, block, ctx) {
  var main = h(doc, "div", { "class": "section-main" });
  if (block.text) main.appendChild(h(doc, "div", { "class": "section-text" },
    [renderText(doc, block.text, ctx)]));
  if (block.fields && block.fields.length) {
    main.appendChild(h(doc, "div", { "class": "section-fields" }, block.fields.map(function (f) {
      return h(doc, "div", { "class": "section-field" }, [renderText(doc, f, ctx)]);
    })));
  }
  var accessory = block.accessory
    ? h(doc, "div", { "class": "section-accessory" },
      [renderElement(doc, block.accessory, block, ctx)])
    : null;
  return h(doc, "div", { "class": "block block-section", "data-block-id": block.block_id },
    [main, accessory]);
}

function renderInput(doc, block, ctx) {
  var element = block.element || {};
  var id = "input-" + (ctx.idPrefix || "") + block.block_id;
  var hintId = block.hint ? id + "-hint" : null;
  var attrs = { id: id, "data-testid": "input-" + block.block_id, "class": "control",
    "aria-describedby": hintId, "aria-required": block.optional ? null : "true" };
  var made;
  if (element.type === "plain_text_input") {
    attrs.placeholder = plainText(element.placeholder) || null;
    attrs.maxlength = element.max_length || null;
    var control = h(doc, element.multiline ? "textarea" : "input",
      element.multiline ? attrs : Object.assign({ type: "text" }, attrs));
    control.value = element.initial_value || "";
    made = { control: control, options: null };
  } else if (element.type === "static_select") {
    made = selectControl(doc, element, attrs);
  } else {
    return unsupported(doc, "input", element.type);
  }
  var label = h(doc, "label", { "for": id, "class": "input-label" }, [plainText(block.label),
    block.optional ? h(doc, "span", { "class": "optional" }, [" (optional)"]) : null]);
  var wrapper = h(doc, "div", { "class": "block block-input" }, [label, made.control,
    block.hint ? h(doc, "div", { "class": "hint", id: hintId }, [plainText(block.hint)]) : null]);
  if (ctx.inputs) {
    ctx.inputs.push({ block_id: block.block_id, action_id: element.action_id,
      type: element.type, optional: !!block.optional, control: made.control,
      minLength: element.min_length || 0,
      options: made.options, wrapper: wrapper, hintId: hintId, errorNode: null });
  }
  return wrapper;
}

/* Shows each error under its input ({block_id: message}; earlier ones are cleared) and
   returns the messages no input on the view is named by. */
function showInputErrors(doc, inputs, errors) {
  var left = Object.assign({}, errors || {});
  (inputs || []).forEach(function (input) {
    if (input.errorNode) input.wrapper.removeChild(input.errorNode);
    input.errorNode = null;
    var message = left[input.block_id];
    delete left[input.block_id];
    var described = [input.hintId];
    if (message !== undefined) {
      var errorId = input.control.getAttribute("id") + "-error";
      input.errorNode = h(doc, "div", { "class": "input-error", id: errorId, role: "alert",
        "data-testid": "error-" + input.block_id }, [String(message)]);
      input.wrapper.appendChild(input.errorNode);
      described.push(errorId);
    }
    input.wrapper.setAttribute("class", message === undefined ? "block block-input"
      : "block block-input has-error");
    input.control.setAttribute("aria-invalid", message === undefined ? "false" : "true");
    var ids = described.filter(Boolean).join(" ");
    if (ids) input.control.setAttribute("aria-describedby", ids);
  });
  return Object.keys(left).map(function (key) { return String(left[key]); });
}

var BLOCKS = {
  section: renderSection,
  header: function (doc, block) {
    return h(doc, "h3", { "class": "block block-header" }, [plainText(block.text)]);
  },
  divider: function (doc) { return h(doc, "hr", { "class": "block block-divider" }); },
  context: function (doc, block, ctx) {
    var elements = (block.elements || []).map(function (e) {
      return e && e.type === "image" ? imageNode(doc, e) : renderText(doc, e, ctx);
    });
    return h(doc, "div", { "class": "block block-context" }, elements);
  },
  actions: function (doc, block, ctx) {
    return h(doc, "div", { "class": "block block-actions", "data-block-id": block.block_id },
      (block.elements || []).map(function (e) { return renderElement(doc, e, block, ctx); }));
  },
  input: renderInput,
  image: function (doc, block) {
    return h(doc, "div", { "class": "block" }, [imageNode(doc, block)]);
  }
};

/* Blocks as a <div>; ctx = {people, channels, me, container, act(action, control),
   confirm(confirmObject, proceed), inputs (a list the input blocks register in)}. */
function renderBlocks(doc, blocks, ctx) {
  return h(doc, "div", { "class": "blocks" }, (blocks || []).map(function (block) {
    var type = block && block.type;
    var render = Object.prototype.hasOwnProperty.call(BLOCKS, type) ? BLOCKS[type] : null;
    return render ? render(doc, block, ctx) : unsupported(doc, "block", type);
  }));
}

/* A message's body: its blocks, or its text when it has none. */
function renderMessageBody(doc, message, ctx) {
  if (message.blocks && message.blocks.length) return renderBlocks(doc, message.blocks, ctx);
  return h(doc, "div", { "class": "blocks" }, [h(doc, "div", { "class": "block block-section" },
    [renderMrkdwn(doc, message.text || "", ctx)])]);
}

var REQUIRED = "Please complete this required field.";

/* What a modal's inputs hold, in view_submission's `values` shape; and what Slack's client
   would mark before sending it (a required input left empty, a text under its min_length),
   as {block_id: message}. */
function collectValues(inputs) {
  var values = {};
  var missing = {};
  (inputs || []).forEach(function (input) {
    var entry;
    if (input.type === "static_select") {
      var index = input.control.value;
      var option = index === "" ? null : input.options[Number(index)] || null;
      entry = { type: "static_select", selected_option: option };
      if (!option && !input.optional) missing[input.block_id] = REQUIRED;
    } else {
      var text = String(input.control.value || "");
      entry = { type: "plain_text_input", value: text };
      if (!text.trim() && !input.optional) {
        missing[input.block_id] = REQUIRED;
      } else if (text && input.minLength && text.length < input.minLength) {
        missing[input.block_id] = "Please enter at least " + input.minLength + " characters.";
      }
    }
    values[input.block_id] = values[input.block_id] || {};
    values[input.block_id][input.action_id] = entry;
  });
  return { values: values, missing: missing };
}

/* ---------------------------------------------------------------- timelines ------- */

function tsNumber(ts) {
  var n = parseFloat(ts);
  return isNaN(n) ? Infinity : n;
}

function byTs(items) {
  return items.map(function (item, index) { return { item: item, index: index }; })
    .sort(function (a, b) {
      return (tsNumber(a.item.message.ts) - tsNumber(b.item.message.ts)) || (a.index - b.index);
    }).map(function (pair) { return pair.item; });
}

/* The commands a person typed, each placed after the messages that were there when it
   was sent (`after`, a ts), so the page never compares its clock with the server's. */
function mergeSent(items, sent) {
  var merged = items.slice();
  (sent || []).forEach(function (command) {
    var at = merged.length;
    while (at > 0) {
      var before = merged[at - 1];
      if (before.kind === "sent" || tsNumber(before.message.ts) <= tsNumber(command.after)) break;
      at -= 1;
    }
    merged.splice(at, 0, { kind: "sent", message: command });
  });
  return merged;
}

function channelIds(state) {
  var ids = {};
  (state.channels || []).forEach(function (c) { ids[c.id] = true; });
  return ids;
}

/* What a conversation shows a person, in order: [{kind: message|ephemeral|sent, message}].
   `where` is {kind: "channel", id} or {kind: "dms"}. Ephemerals show where they were sent
   from; those from anywhere that is not a channel of the workspace show in the DMs. */
function conversationItems(state, person, where, sent) {
  var known = channelIds(state);
  var items = [];
  if (where.kind === "channel") {
    var channel = (state.channels || []).filter(function (c) { return c.id === where.id; })[0];
    (channel ? channel.messages || [] : []).forEach(function (m) {
      items.push({ kind: "message", message: m });
    });
  } else {
    ((state.dms || {})[person] || []).forEach(function (m) {
      items.push({ kind: "message", message: m });
    });
  }
  ((state.ephemerals || {})[person] || []).forEach(function (m) {
    var here = where.kind === "channel" ? m.channel === where.id : !known[m.channel];
    if (here) items.push({ kind: "ephemeral", message: m });
  });
  items = byTs(items);
  return where.kind === "dms" ? mergeSent(items, sent) : items;
}

function countItems(items) {
  return items.reduce(function (total, item) {
    return total + 1 + ((item.message && item.message.replies) || []).length;
  }, 0);
}

function protocolName(protocol) {
  var names = { "-1": "all", "6": "tcp", "17": "udp", "1": "icmp" };
  var key = String(protocol == null ? "-1" : protocol).toLowerCase();
  return names[key] || key;
}

/* `tcp/22 from 203.0.113.7/32`; `tcp/8000-8010 from ...`; `all from ...`. */
function ruleLabel(rule) {
  var protocol = protocolName(rule.protocol);
  var low = rule.from_port;
  var high = rule.to_port;
  var ports = "";
  if (protocol !== "all" && low !== null && low !== undefined && low !== -1) {
    ports = "/" + (high === undefined || high === null || high === low ? low : low + "-" + high);
  }
  return protocol + ports + " from " + (rule.cidr || "?");
}

function ruleKey(rule) {
  return [protocolName(rule.protocol), rule.from_port, rule.to_port, rule.cidr].join("|");
}

/* ---------------------------------------------------------------- the page -------- */

var POLL_MS = 700;

function startPage(win, doc) {
  var ui = {
    state: null, version: null, person: null, where: { kind: "dms" }, lastWhere: null,
    sent: {}, seen: null, arrived: null, closedThreads: {}, dismissed: {}, modal: null,
    rules: null, rulesTimer: null, polling: false, pollAgain: false, timer: null, toastTimer: null
  };
  var $ = function (id) { return doc.getElementById(id); };
  restoreChoice();

  /* ---- server ---- */

  function post(path, body) {
    return win.fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, error: "the playground answered " + response.status +
          " without a JSON body; see the terminal running jit demo" };
      });
    });
  }

  function poll() {
    if (ui.polling) { ui.pollAgain = true; return; }
    ui.polling = true;
    win.clearTimeout(ui.timer);
    win.fetch("/api/state", { cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("the playground answered " + response.status);
      return response.json();
    }).then(function (state) {
      connection("");
      if (state.version !== ui.version) {
        var first = ui.state === null;
        ui.version = state.version;
        ui.state = state;
        render();
        if (first && ui.where.kind === "home") homeOpened();
      }
    }).catch(function (err) {
      connection("Lost contact with the playground (" + err.message + "); retrying. " +
        "Is jit demo still running?");
    }).then(function () {
      ui.polling = false;
      if (ui.pollAgain) { ui.pollAgain = false; poll(); return; }
      ui.timer = win.setTimeout(poll, POLL_MS);
    });
  }

  function connection(problem) {
    var node = $("connection");
    node.textContent = problem;
    node.hidden = !problem;
  }

  function notice(text) {
    var node = $("toast");
    node.textContent = text;
    node.hidden = !text;
    win.clearTimeout(ui.toastTimer);
    if (text) ui.toastTimer = win.setTimeout(function () { notice(""); }, 8000);
  }

  /* ---- choices kept over a reload ---- */

  function restoreChoice() {
    try {
      var kept = JSON.parse(win.sessionStorage.getItem("jit-playground") || "{}");
      if (kept.person) ui.person = kept.person;
      if (kept.where && kept.where.kind) ui.where = kept.where;
    } catch (err) { /* private mode: start from the defaults */ }
    var asked = /[?&]as=([^&#]+)/.exec(win.location.search);
    if (asked) ui.person = decodeURIComponent(asked[1]);
  }

  function keepChoice() {
    try {
      win.sessionStorage.setItem("jit-playground",
        JSON.stringify({ person: ui.person, where: ui.where }));
    } catch (err) { /* nothing to keep it in */ }
  }

  function choose(person, where) {
    var before = ui.person + "|" + whereKey(ui.where);
    if (person) ui.person = person;
    if (where) ui.where = where;
    keepChoice();
    render();
    if (ui.where.kind === "home" && before !== ui.person + "|home") homeOpened();
    $("composer").focus();
  }

  /* Slack tells jit each time a person opens its Home tab, and jit publishes the view. */
  function homeOpened() {
    post("/api/home", { user: ui.person }).then(function (answer) {
      if (!answer.ok) notice("Opening the App Home: " + (answer.error || "refused"));
    }, function (err) { notice("Opening the App Home did not reach the playground: " +
      err.message); }).then(poll);
  }

  /* ---- lookups ---- */

  function personById(id) {
    return ((ui.state && ui.state.people) || []).filter(function (p) { return p.id === id; })[0];
  }

  function lookups() {
    var people = {};
    var channels = {};
    (ui.state.people || []).forEach(function (p) { people[p.id] = p.name; });
    (ui.state.channels || []).forEach(function (c) { channels[c.id] = c.name.replace(/^#/, ""); });
    return { people: people, channels: channels };
  }

  function items(person, where) {
    return conversationItems(ui.state, person, where, ui.sent[person] || []);
  }

  function conversations() {
    return [{ kind: "dms" }].concat((ui.state.channels || []).map(function (c) {
      return { kind: "channel", id: c.id };
    }));
  }

  function whereKey(where) {
    return where.kind === "channel" ? "channel:" + where.id : where.kind;
  }

  function unread(person, where) {
    var total = countItems(items(person, where));
    return Math.max(0, total - (ui.seen[person + "|" + whereKey(where)] || 0));
  }

  function markSeen(person, where) {
    ui.seen[person + "|" + whereKey(where)] = countItems(items(person, where));
  }

  /* ---- rendering ---- */

  function render() {
    if (!ui.state) return;
    var people = ui.state.people || [];
    if (!personById(ui.person) && people.length) ui.person = people[0].id;
    if (ui.where.kind === "channel" && !(ui.state.channels || []).some(function (c) {
      return c.id === ui.where.id;
    })) ui.where = { kind: "dms" };
    if (ui.seen === null) {
      ui.seen = {};
      people.forEach(function (p) {
        conversations().forEach(function (w) { markSeen(p.id, w); });
      });
    }
    var restoreFocus = rememberFocus();
    stampArrivals();
    markSeen(ui.person, ui.where);
    renderSidebar();
    renderConversation();
    renderRules();
    renderPolicy();
    renderModal(restoreFocus);
    restoreFocus();
  }

  function rememberFocus() {
    var active = doc.activeElement;
    var key = active && (active.getAttribute("data-focus-key") ? "data-focus-key"
      : active.getAttribute("data-testid") ? "data-testid" : null);
    if (!key) return function () {};
    var value = active.getAttribute(key);
    return function () {
      if (doc.activeElement && doc.activeElement !== doc.body) return;
      var again = doc.querySelector("[" + key + "=\"" + win.CSS.escape(value) + "\"]");
      if (again) again.focus();
    };
  }

  function badge(count, label) {
    return count > 0 ? h(doc, "span", { "class": "badge", "aria-label": count + " " + label },
      [String(count)]) : null;
  }

  function navButton(testid, selected, label, extra, onClick) {
    var button = h(doc, "button", { type: "button", "class": "nav-item", "data-testid": testid,
      "aria-current": selected ? "page" : null }, [label].concat(extra));
    button.addEventListener("click", onClick);
    return button;
  }

  function renderSidebar() {
    var list = $("people");
    list.replaceChildren();
    (ui.state.people || []).forEach(function (person, index) {
      var mine = person.id === ui.person;
      var waiting = unread(person.id, { kind: "dms" });
      var hasModal = !!(ui.state.modal || {})[person.id];
      var button = h(doc, "button", { type: "button", "class": "person",
        "data-testid": "person-" + person.id, "aria-pressed": mine ? "true" : "false" }, [
        h(doc, "span", { "class": "avatar avatar-" + (index % 4), "aria-hidden": "true" },
          [(person.name || "?").charAt(0)]),
        h(doc, "span", { "class": "person-text" }, [
          h(doc, "span", { "class": "person-name" }, [person.name]),
          h(doc, "span", { "class": "person-role" }, [person.role || ""])]),
        hasModal && !mine ? h(doc, "span", { "class": "badge badge-modal",
          title: "jit opened a form for " + person.name }, ["form"]) : null,
        mine ? null : badge(waiting, "unread from jit")]);
      button.addEventListener("click", function () { choose(person.id, null); });
      list.appendChild(h(doc, "li", {}, [button]));
    });
    var channels = $("channels");
    channels.replaceChildren();
    (ui.state.channels || []).forEach(function (channel) {
      var where = { kind: "channel", id: channel.id };
      var selected = ui.where.kind === "channel" && ui.where.id === channel.id;
      channels.appendChild(h(doc, "li", {}, [navButton("channel-" + channel.id, selected,
        "# " + channel.name.replace(/^#/, ""), [badge(unread(ui.person, where), "new")],
        function () { choose(null, where); })]));
    });
    var dms = $("nav-dms");
    dms.setAttribute("aria-current", ui.where.kind === "dms" ? "page" : "false");
    $("dms-badge").replaceChildren();
    var dmCount = badge(unread(ui.person, { kind: "dms" }), "new");
    if (dmCount) $("dms-badge").appendChild(dmCount);
    $("nav-home").setAttribute("aria-current", ui.where.kind === "home" ? "page" : "false");
    var me = personById(ui.person);
    $("composer-person").textContent = me ? me.name : "";
  }

  function blockContext(container) {
    var names = lookups();
    return { people: names.people, channels: names.channels, me: ui.person,
      container: container, confirm: confirmThen,
      act: function (action, control) { act(container, action, control); } };
  }

  function renderConversation() {
    var timeline = $("timeline");
    var same = ui.lastWhere === ui.person + "|" + whereKey(ui.where);
    var atBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 48;
    var top = timeline.scrollTop;
    var me = personById(ui.person);
    var myName = me ? me.name : "you";
    timeline.replaceChildren();
    if (ui.where.kind === "home") {
      $("conv-title").textContent = "jit App Home";
      $("conv-sub").textContent = "What jit shows " + myName + " on its Home tab.";
      timeline.appendChild(homeNode(myName));
    } else {
      var shown = items(ui.person, ui.where);
      headerFor(myName);
      if (!shown.length) timeline.appendChild(emptyNode(myName));
      shown.forEach(function (item) { timeline.appendChild(itemNode(item)); });
    }
    ui.lastWhere = ui.person + "|" + whereKey(ui.where);
    timeline.scrollTop = same && !atBottom ? top : timeline.scrollHeight;
  }

  function headerFor(myName) {
    if (ui.where.kind === "dms") {
      $("conv-title").textContent = "jit";
      $("conv-sub").textContent = "Direct messages between " + myName + " and jit. Answers " +
        "only " + myName + " can see show here too.";
      return;
    }
    var channel = (ui.state.channels || []).filter(function (c) {
      return c.id === ui.where.id;
    })[0];
    $("conv-title").textContent = "# " + channel.name.replace(/^#/, "");
    $("conv-sub").textContent = "A channel jit posts to; everyone in the playground sees it.";
  }

  function emptyNode(myName) {
    var text = ui.where.kind === "dms"
      ? "Nothing from jit yet. Type /jit help below to start, as " + myName + "."
      : "No messages in this channel yet.";
    return h(doc, "p", { "class": "empty" }, [text]);
  }

  function homeNode(myName) {
    var view = (ui.state.home || {})[ui.person];
    if (!view) {
      return h(doc, "p", { "class": "empty" }, ["jit has not published a Home for " + myName +
        " yet. It does when the Home tab is opened, and after a request changes."]);
    }
    return h(doc, "div", { "class": "home-view", "data-view-id": view.id },
      [renderBlocks(doc, view.blocks, blockContext({ type: "view", view_id: view.id }))]);
  }

  /* When each message arrived, for a stand-in whose ts is a counter rather than a time:
     null for those already there when the page loaded. */
  function stampArrivals() {
    var first = ui.arrived === null;
    var now = Date.now();
    if (first) ui.arrived = {};
    var stamp = function (m) {
      var key = m.channel + "|" + m.ts;
      if (!Object.prototype.hasOwnProperty.call(ui.arrived, key)) {
        ui.arrived[key] = first ? null : now;
      }
      (m.replies || []).forEach(stamp);
    };
    var lists = (ui.state.channels || []).map(function (c) { return c.messages || []; });
    [ui.state.dms || {}, ui.state.ephemerals || {}].forEach(function (byPerson) {
      Object.keys(byPerson).forEach(function (p) { lists.push(byPerson[p] || []); });
    });
    lists.forEach(function (list) { list.forEach(stamp); });
  }

  function clock(ms) {
    // As jit writes its times: 24-hour, UTC.
    return new Date(ms).toLocaleTimeString("en-GB", {
      hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "UTC" }) + " UTC";
  }

  /* The message's ts when it reads as a time near now, else when the page saw it arrive. */
  function timeLabel(message) {
    var ms = parseFloat(message.ts) * 1000;
    if (Math.abs(ms - Date.now()) < 2 * 86400000) return clock(ms);
    var arrived = ui.arrived && ui.arrived[message.channel + "|" + message.ts];
    return arrived ? clock(arrived) : "";
  }

  function metaLine(name, badgeText, when) {
    return h(doc, "div", { "class": "message-meta" }, [h(doc, "strong", {}, [name]),
      badgeText ? h(doc, "span", { "class": "app-badge" }, [badgeText]) : null,
      when ? h(doc, "span", { "class": "message-time" }, [when]) : null]);
  }

  function messageArticle(message, ephemeral, reply) {
    var container = { type: "message", channel: message.channel, ts: message.ts };
    if (ephemeral) container.is_ephemeral = true;
    return h(doc, "article", { "class": "message", "data-testid": "message",
      "data-ts": message.ts, "data-channel": message.channel,
      "data-reply": reply ? "true" : null }, [
      h(doc, "div", { "class": "avatar avatar-bot", "aria-hidden": "true" }, ["j"]),
      h(doc, "div", { "class": "message-main" }, [metaLine("jit", "APP", timeLabel(message)),
        renderMessageBody(doc, message, blockContext(container)),
        ephemeral ? null : threadNode(message)])]);
  }

  function itemNode(item) {
    if (item.kind === "sent") return sentNode(item.message);
    if (item.kind === "message") return messageArticle(item.message, false, false);
    return h(doc, "div", { "class": "ephemeral", "data-testid": "ephemeral" }, [
      h(doc, "div", { "class": "ephemeral-note" }, [
        h(doc, "span", { "aria-hidden": "true" }, ["\u{1F441}\uFE0F "]), "Only visible to you"]),
      messageArticle(item.message, true, false)]);
  }

  function threadNode(message) {
    var replies = message.replies || [];
    if (!replies.length) return null;
    var key = message.channel + "|" + message.ts;
    var open = !ui.closedThreads[key];
    var list = h(doc, "div", { "class": "thread", "data-testid": "thread-replies",
      id: "thread-" + key.replace(/[^A-Za-z0-9]/g, "-") },
      replies.map(function (r) { return messageArticle(r, false, true); }));
    list.hidden = !open;
    var toggle = h(doc, "button", { type: "button", "class": "thread-toggle",
      "data-testid": "thread-toggle", "data-focus-key": "thread|" + key,
      "aria-expanded": open ? "true" : "false", "aria-controls": list.getAttribute("id") },
      [replies.length + (replies.length === 1 ? " reply" : " replies")]);
    toggle.addEventListener("click", function () {
      ui.closedThreads[key] = open;
      open = !open;
      list.hidden = !open;
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
    return h(doc, "div", { "class": "thread-wrap" }, [toggle, list]);
  }

  function sentNode(command) {
    var me = personById(command.person);
    var status = command.status === "sending" ? "sending\u2026"
      : command.status === "failed" ? "not sent: " + command.error : "";
    return h(doc, "article", { "class": "message message-sent", "data-testid": "sent-command",
      "data-status": command.status }, [
      h(doc, "div", { "class": "avatar avatar-" + command.avatar, "aria-hidden": "true" },
        [(me ? me.name : "?").charAt(0)]),
      h(doc, "div", { "class": "message-main" }, [
        metaLine(me ? me.name : command.person, "", command.time),
        h(doc, "div", { "class": "command-text" }, [h(doc, "code", {}, [command.text])]),
        status ? h(doc, "div", { "class": "sent-status" + (command.status === "failed"
          ? " sent-failed" : "") }, [status]) : null])]);
  }

  var FLASH_MS = 2200;

  /* The rules, a new one flashing green and a gone one fading out for FLASH_MS; a render
     in between picks the animation up where it was. */
  function renderRules() {
    var group = ui.state.group;
    $("rules-title").textContent = "Security group " + (group ? group.id : "\u2026") +
      " (embedded EC2)";
    $("rules-sub").textContent = group ? group.name + ": inbound rules, live" : "Starting\u2026";
    $("rules-error").textContent = ui.state.rules_error || "";
    $("rules-error").hidden = !ui.state.rules_error;
    var now = Date.now();
    var current = {};
    (ui.state.rules || []).forEach(function (rule) { current[ruleKey(rule)] = rule; });
    var changes = ui.rules ? ruleChanges(ui.rules.current, current, now) : [];
    if (!ui.rules) ui.rules = { current: current, addedAt: {}, gone: [] };
    ui.rules.current = current;
    ui.rules.gone = ui.rules.gone.filter(function (g) {
      return now - g.at < FLASH_MS && !current[ruleKey(g.rule)];
    });
    var list = $("rules");
    list.replaceChildren();
    (ui.state.rules || []).forEach(function (rule) {
      var since = now - (ui.rules.addedAt[ruleKey(rule)] || -Infinity);
      list.appendChild(ruleRow(rule, since < FLASH_MS ? "rule rule-added" : "rule", "rule", since));
    });
    ui.rules.gone.forEach(function (g) {
      list.appendChild(ruleRow(g.rule, "rule rule-removed", "rule-removed", now - g.at));
    });
    if (!(ui.state.rules || []).length) {
      list.appendChild(h(doc, "li", { "class": "rule-empty" },
        ["No inbound rules: every port is closed."]));
    }
    if (changes.length) $("rules-live").textContent = changes.join(" ");
    if (ui.rules.gone.length || changes.length) {
      win.clearTimeout(ui.rulesTimer);
      ui.rulesTimer = win.setTimeout(renderRules, FLASH_MS);
    }
  }

  function ruleChanges(before, current, now) {
    var changes = [];
    Object.keys(current).forEach(function (key) {
      if (before[key]) return;
      ui.rules.addedAt[key] = now;
      changes.push("Rule added: " + ruleLabel(current[key]) + ".");
    });
    Object.keys(before).forEach(function (key) {
      if (current[key]) return;
      ui.rules.gone.push({ rule: before[key], at: now });
      changes.push("Rule removed: " + ruleLabel(before[key]) + ".");
    });
    return changes;
  }

  function ruleRow(rule, className, testid, since) {
    var label = ruleLabel(rule);
    var row = h(doc, "li", { "class": className, "data-testid": testid, "data-rule": label }, [
      h(doc, "span", { "class": "rule-main" }, [label]),
      rule.description ? " " : null,
      rule.description ? h(doc, "span", { "class": "rule-desc" }, [rule.description]) : null,
      testid === "rule-removed" ? h(doc, "span", { "class": "rule-gone-label" },
        [" (removed)"]) : null]);
    if (since < FLASH_MS) row.style.animationDelay = "-" + Math.round(since) + "ms";
    return row;
  }

  function renderPolicy() {
    var text = ui.state.policy || "(the demo has no policy loaded)";
    if ($("policy").textContent !== text) $("policy").textContent = text;
  }

  /* ---- actions ---- */

  function act(container, action, control) {
    var body = Object.assign({ user: ui.person, container: container }, action);
    var restoreFocus = rememberFocus();  // disabling the control takes focus from it
    control.disabled = true;
    post("/api/action", body).then(function (answer) {
      if (!answer.ok) notice("jit did not take that click: " + (answer.error || "no reason given"));
    }, function (err) {
      notice("The click did not reach the playground: " + err.message);
    }).then(function () {
      control.disabled = false;
      restoreFocus();
      poll();
    });
  }

  function confirmThen(confirm, proceed) {
    var root = $("confirm-root");
    var restoreFocus = rememberFocus();
    var close = function () {
      root.replaceChildren();
      $("layout").inert = !!ui.modal;
      doc.removeEventListener("keydown", onKey);
      restoreFocus();
    };
    var onKey = function (event) { if (event.key === "Escape") close(); };
    var style = confirm.style === "danger" ? "btn btn-danger" : "btn btn-primary";
    var ok = h(doc, "button", { type: "button", "class": style, "data-testid": "confirm-ok" },
      [plainText(confirm.confirm) || "Yes"]);
    var cancel = h(doc, "button", { type: "button", "class": "btn",
      "data-testid": "confirm-cancel" }, [plainText(confirm.deny) || "Cancel"]);
    ok.addEventListener("click", function () { close(); proceed(); });
    cancel.addEventListener("click", close);
    root.appendChild(h(doc, "div", { "class": "overlay" }, [h(doc, "div", {
      "class": "dialog dialog-confirm", role: "alertdialog", "aria-modal": "true",
      "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text",
      "data-testid": "confirm-dialog" }, [
      h(doc, "h2", { id: "confirm-title" }, [plainText(confirm.title) || "Are you sure?"]),
      h(doc, "div", { id: "confirm-text", "class": "dialog-body" },
        [renderText(doc, confirm.text, blockContext(null))]),
      h(doc, "div", { "class": "dialog-buttons" }, [cancel, ok])])]));
    doc.addEventListener("keydown", onKey);
    $("layout").inert = true;
    ok.focus();
  }

  function sendCommand(event) {
    event.preventDefault();
    var input = $("composer");
    var typed = input.value.trim();
    if (!typed || !ui.state) return;
    var text = typed.replace(/^\/jit(?:\s+|$)/i, "").trim();
    var dmItems = items(ui.person, { kind: "dms" });
    var last = dmItems.filter(function (i) { return i.kind !== "sent"; }).pop();
    var me = (ui.state.people || []).map(function (p) { return p.id; }).indexOf(ui.person);
    var command = { person: ui.person, text: ("/jit " + text).trim(),
      after: last ? last.message.ts : "0",
      status: "sending", error: "", avatar: Math.max(me, 0) % 4,
      time: clock(Date.now()) };
    (ui.sent[ui.person] = ui.sent[ui.person] || []).push(command);
    ui.where = { kind: "dms" };
    keepChoice();
    busy(true);
    $("composer-error").textContent = "";
    render();
    post("/api/command", { user: command.person, text: text }).then(function (answer) {
      if (answer.ok) {
        command.status = "sent";
        input.value = "";
      } else {
        command.status = "failed";
        command.error = answer.error || "no reason given";
        $("composer-error").textContent = "jit did not take the command: " + command.error;
      }
    }, function (err) {
      command.status = "failed";
      command.error = err.message;
      $("composer-error").textContent = "The command did not reach the playground: " + err.message;
    }).then(function () {
      busy(false);
      render();
      input.focus();
      poll();
    });
  }

  function busy(on) {
    $("composer").disabled = on;
    $("send").disabled = on;
    $("composer-form").setAttribute("aria-busy", on ? "true" : "false");
  }

  /* ---- modals ---- */

  /* The person's modal, if jit opened one; `restoreFocus` puts focus back where it was
     before the modal opened once it closes. */
  function renderModal(restoreFocus) {
    var view = (ui.state.modal || {})[ui.person] || null;
    var key = view ? ui.person + "|" + view.id + "|" + JSON.stringify(view) : null;
    if (key && ui.dismissed[ui.person] === key) key = null;
    if (ui.modal && ui.modal.key === key) return;
    var root = $("modal-root");
    var restore = ui.modal ? ui.modal.restoreFocus : restoreFocus || rememberFocus();
    root.replaceChildren();
    ui.modal = null;
    $("layout").inert = !!key;
    if (!key) {
      restore();
      return;
    }
    ui.modal = buildModal(view, key);
    ui.modal.restoreFocus = restore;
    root.appendChild(ui.modal.node);
    var first = ui.modal.inputs[0] ? ui.modal.inputs[0].control : ui.modal.cancel;
    first.focus();
  }

  function buildModal(view, key) {
    var ctx = blockContext({ type: "view", view_id: view.id });
    ctx.inputs = [];
    ctx.idPrefix = "modal-";
    var general = h(doc, "div", { "class": "modal-error", role: "alert",
      "data-testid": "modal-error" });
    general.hidden = true;
    var cancel = h(doc, "button", { type: "button", "class": "btn",
      "data-testid": "modal-cancel" }, [plainText(view.close) || "Cancel"]);
    var submit = view.submit ? h(doc, "button", { type: "submit", "class": "btn btn-primary",
      "data-testid": "modal-submit" }, [plainText(view.submit)]) : null;
    var form = h(doc, "form", { "class": "dialog modal", role: "dialog", "aria-modal": "true",
      "aria-labelledby": "modal-title", "data-testid": "modal", "data-view-id": view.id,
      novalidate: true }, [
      h(doc, "header", { "class": "modal-head" }, [
        h(doc, "h2", { id: "modal-title" }, [plainText(view.title)]),
        h(doc, "span", { "class": "modal-app" }, ["jit"])]),
      h(doc, "div", { "class": "modal-body" }, [general, renderBlocks(doc, view.blocks, ctx)]),
      h(doc, "div", { "class": "dialog-buttons" }, [cancel, submit])]);
    var modal = { key: key, person: ui.person, view: view,
      node: h(doc, "div", { "class": "overlay" }, [form]),
      inputs: ctx.inputs, cancel: cancel, submit: submit, general: general };
    cancel.addEventListener("click", function () { closeModal(modal); });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      submitModal(modal);
    });
    form.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); closeModal(modal); }
    });
    return modal;
  }

  function modalBusy(modal, on) {
    modal.cancel.disabled = on;
    if (modal.submit) modal.submit.disabled = on;
  }

  /* Shows what is wrong and puts focus on the first input it is about. */
  function modalProblem(modal, messages) {
    modal.general.textContent = messages.join(" ");
    modal.general.hidden = !messages.length;
    var wrong = modal.inputs.filter(function (i) { return i.errorNode; })[0];
    (wrong ? wrong.control : modal.submit || modal.cancel).focus();
  }

  function submitModal(modal) {
    var got = collectValues(modal.inputs);
    if (Object.keys(got.missing).length) {
      modalProblem(modal, showInputErrors(doc, modal.inputs, got.missing));
      return;
    }
    modalBusy(modal, true);
    post("/api/submit", { user: modal.person, view_id: modal.view.id, values: got.values })
      .then(function (answer) {
        if (answer.ok) {
          ui.dismissed[modal.person] = modal.key;
          renderModal();
          return;
        }
        var left = showInputErrors(doc, modal.inputs, answer.errors || {});
        if (answer.error) left.push(answer.error);
        modalBusy(modal, false);
        modalProblem(modal, left.length ? left : answer.errors ? [] : ["jit refused the form."]);
      }, function (err) {
        modalBusy(modal, false);
        modalProblem(modal, ["The form did not reach the playground: " + err.message]);
      }).then(poll);
  }

  function closeModal(modal) {
    ui.dismissed[modal.person] = modal.key;
    renderModal();
    post("/api/close", { user: modal.person, view_id: modal.view.id }).then(function (answer) {
      if (!answer.ok) notice("Closing the form: " + (answer.error || "refused"));
    }, function (err) { notice("Closing the form did not reach the playground: " + err.message); })
      .then(poll);
  }

  /* ---- wiring ---- */

  $("composer-form").addEventListener("submit", sendCommand);
  $("nav-dms").addEventListener("click", function () { choose(null, { kind: "dms" }); });
  $("nav-home").addEventListener("click", function () { choose(null, { kind: "home" }); });
  poll();
}

var exported = {
  parseMrkdwn: parseMrkdwn, renderMrkdwn: renderMrkdwn, renderText: renderText,
  renderBlocks: renderBlocks, renderMessageBody: renderMessageBody,
  collectValues: collectValues, showInputErrors: showInputErrors,
  conversationItems: conversationItems, mergeSent: mergeSent,
  countItems: countItems, ruleLabel: ruleLabel, ruleKey: ruleKey, decodeEntities: decodeEntities
};

if (typeof module !== "undefined" && module.exports) module.exports = exported;
if (typeof window !== "undefined" && typeof document !== "undefined") {
  window.jitPlayground = exported;
  document.addEventListener("DOMContentLoaded", function () { startPage(window, document); });
}
