// The page `room-bridge dev` serves: join the dev room, talk to the AI, see what flows.
// Plain DOM and livekit-client; bundled by esbuild into bridge/local/page/page.js (`make page`).
import {
  ConnectionState,
  DisconnectReason,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
  createAudioAnalyser,
} from 'livekit-client';
import { Transcript } from './transcript.js';
import { $, describeError, notify, clearNotice } from './ui.js';

const STATE_ATTRIBUTE = 'lk.agent.state';
const HUMAN_STATE_PREFIX = 'bridge.state.';
const TOOL_ATTRIBUTE = 'bridge.tool';
const TRANSCRIPTION_TOPIC = 'lk.transcription';
const CHAT_TOPIC = 'lk.chat';
const LEVEL_INTERVAL_MS = 50;

/** The live call: {room, info, transcript, analysers, timers}, or null. */
let call = null;

function isAgent(participant) {
  return (
    participant.kind === ParticipantKind.AGENT ||
    participant.attributes?.[STATE_ATTRIBUTE] !== undefined
  );
}

function agentOf(room) {
  for (const p of room.remoteParticipants.values()) if (isAgent(p)) return p;
  return undefined;
}

function displayName(room, identity) {
  if (identity === room.localParticipant.identity) return room.localParticipant.name || identity;
  const p = room.remoteParticipants.get(identity);
  if (!p) return identity;
  if (isAgent(p)) return p.attributes?.['lk.agent.name'] || p.name || 'AI';
  return p.name || identity;
}

async function fetchJoinInfo(name) {
  let response;
  try {
    response = await fetch('token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name }),
    });
  } catch {
    throw new Error(
      'Cannot reach the dev server that serves this page. Is `room-bridge dev` still running?',
    );
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `The dev server answered ${response.status}.`);
  return body;
}

function showModel(info) {
  const model = $('#model');
  model.textContent = `model: ${info.model_label}`;
  model.classList.toggle('real', info.model === 'openai');
  const audience = $('#audience');
  audience.hidden = false;
  audience.textContent =
    info.audience === 'private'
      ? 'private: you hear only your own conversation'
      : 'shared: everyone hears every answer';
}

// ---- agent state, tool activity and levels ------------------------------------------------

function agentState(room, info) {
  const agent = agentOf(room);
  if (!agent) return 'waiting';
  const mine = agent.attributes?.[HUMAN_STATE_PREFIX + room.localParticipant.identity];
  // Private: only my own conversation matters. Shared: the room-level state is what I hear.
  if (info.audience === 'private' && mine) return mine;
  return agent.attributes?.[STATE_ATTRIBUTE] || mine || 'initializing';
}

function renderAgent(room, info) {
  const state = agentState(room, info);
  const label = $('#state');
  if (label.dataset.state !== state) {
    label.dataset.state = state;
    label.textContent = state === 'waiting' ? 'waiting for the AI to join' : state;
    $('#orb').dataset.state = state;
  }
  const agent = agentOf(room);
  $('#agent-name').textContent = agent ? displayName(room, agent.identity) : 'AI';
  const tool = agent?.attributes?.[TOOL_ATTRIBUTE];
  const line = $('#tool');
  line.hidden = !tool;
  line.textContent = tool ? `Tool: ${tool}` : '';
}

function watchLevels(current) {
  const timer = window.setInterval(() => {
    let agent = 0;
    let mic = 0;
    for (const [key, analyser] of current.analysers) {
      const volume = analyser.calculateVolume();
      if (key === 'mic') mic = volume;
      else agent = Math.max(agent, volume);
    }
    $('#agent-level').value = agent;
    $('#mic-level').value = mic;
  }, LEVEL_INTERVAL_MS);
  current.timers.push(timer);
}

// livekit-client's default smoothing (0.8 per reading) keeps the bar up for 1-2 s after a voice
// stops at our reading rate; this one falls to nothing within a few readings (~0.2 s).
const LEVEL_SMOOTHING = 0.3;

function addAnalyser(current, key, track) {
  removeAnalyser(current, key);
  const options = { cloneTrack: true, smoothingTimeConstant: LEVEL_SMOOTHING };
  current.analysers.set(key, createAudioAnalyser(track, options));
}

function removeAnalyser(current, key) {
  const analyser = current.analysers.get(key);
  if (analyser) {
    current.analysers.delete(key);
    analyser.cleanup().catch(() => {});
  }
}

// ---- presence -----------------------------------------------------------------------------

function renderPeople(room) {
  const list = $('#people');
  const everyone = [room.localParticipant, ...room.remoteParticipants.values()];
  const speaking = new Set(room.activeSpeakers.map((p) => p.identity));
  list.replaceChildren(
    ...everyone.map((p) => {
      const item = document.createElement('li');
      item.dataset.identity = p.identity;
      item.classList.toggle('speaking', speaking.has(p.identity));
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = displayName(room, p.identity);
      item.append(who);
      const tags = [];
      if (p === room.localParticipant) tags.push('you');
      if (isAgent(p)) tags.push('AI');
      if (!isAgent(p) && !p.isMicrophoneEnabled) tags.push('muted');
      if (p.isCameraEnabled) tags.push('camera');
      for (const text of tags) {
        const tag = document.createElement('span');
        tag.className = 'tag';
        tag.textContent = text;
        item.append(tag);
      }
      return item;
    }),
  );
}

// ---- controls -----------------------------------------------------------------------------

function renderControls(room) {
  const mic = room.localParticipant.isMicrophoneEnabled;
  const cam = room.localParticipant.isCameraEnabled;
  $('#mic').setAttribute('aria-pressed', String(mic));
  $('#mic').textContent = mic ? 'Microphone on' : 'Microphone off';
  $('#camera').setAttribute('aria-pressed', String(cam));
  $('#camera').textContent = cam ? 'Camera on' : 'Camera off';
}

async function setMicrophone(current, enabled) {
  const { room } = current;
  try {
    const publication = await room.localParticipant.setMicrophoneEnabled(enabled);
    if (enabled && publication?.track) addAnalyser(current, 'mic', publication.track);
    if (!enabled) removeAnalyser(current, 'mic');
  } catch (error) {
    notify(describeError(error, 'microphone') + ' You can still chat.');
  }
  renderControls(room);
  renderPeople(room);
}

async function setCamera(current, enabled) {
  const { room } = current;
  const preview = $('#preview');
  try {
    const publication = await room.localParticipant.setCameraEnabled(enabled);
    if (enabled && publication?.track) {
      publication.track.attach(preview);
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
  } catch (error) {
    notify(describeError(error, 'camera'));
  }
  renderControls(room);
  renderPeople(room);
}

// ---- the call -----------------------------------------------------------------------------

// Everyone's voice plays, as in a meeting; with a private audience only the AI's answer to
// you (the server lets you subscribe to nothing else of the AI's) and nobody else's voice.
function attachAudio(current, track, participant) {
  if (track.kind !== Track.Kind.Audio) return;
  const agent = isAgent(participant);
  if (!agent && current.info.audience === 'private') return;
  const element = track.attach();
  element.dataset.sid = track.sid;
  element.dataset.agent = String(agent);
  $('#audio').append(element);
  if (agent) addAnalyser(current, track.sid, track);
}

function detachAudio(current, track) {
  for (const element of track.detach()) element.remove();
  removeAnalyser(current, track.sid);
}

function wireRoom(current, transcript) {
  const { room, info } = current;
  const refresh = () => {
    renderAgent(room, info);
    renderPeople(room);
    transcript.relabel();
  };
  room
    .on(RoomEvent.ParticipantConnected, (participant) => {
      if (isAgent(participant)) clearNotice('agent');
      refresh();
    })
    .on(RoomEvent.ParticipantDisconnected, (participant) => {
      if (isAgent(participant)) notify('The AI left the room.', 'agent');
      refresh();
    })
    .on(RoomEvent.ParticipantAttributesChanged, refresh)
    .on(RoomEvent.ParticipantNameChanged, refresh)
    .on(RoomEvent.ActiveSpeakersChanged, () => renderPeople(room))
    .on(RoomEvent.TrackMuted, () => renderPeople(room))
    .on(RoomEvent.TrackUnmuted, () => renderPeople(room))
    .on(RoomEvent.TrackPublished, () => renderPeople(room))
    .on(RoomEvent.TrackUnpublished, () => renderPeople(room))
    .on(RoomEvent.LocalTrackPublished, () => renderPeople(room))
    .on(RoomEvent.TrackSubscribed, (track, _pub, participant) =>
      attachAudio(current, track, participant),
    )
    .on(RoomEvent.TrackUnsubscribed, (track) => detachAudio(current, track))
    .on(RoomEvent.MediaDevicesError, (error) => notify(describeError(error, 'microphone')))
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      if (!room.canPlaybackAudio) {
        notify('The browser blocked the AI\'s voice: click anywhere on the page to hear it.');
        document.addEventListener('click', () => room.startAudio(), { once: true });
      }
    })
    .on(RoomEvent.Reconnecting, () => notify('Connection lost; reconnecting…', 'connection'))
    .on(RoomEvent.Reconnected, () => clearNotice('connection'))
    .on(RoomEvent.Disconnected, (reason) => {
      if (call === current) {
        leave(current);
        notify(`Disconnected from the room (${describeReason(reason)}). Join again to continue.`);
      }
    });
  room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, sender) => {
    transcript.fromStream(reader, sender.identity).catch((error) => {
      console.warn('transcript stream failed', error);
    });
  });
  room.registerTextStreamHandler(CHAT_TOPIC, async (reader, sender) => {
    const text = await reader.readAll();
    transcript.chat(sender.identity, text);
  });
}

function describeReason(reason) {
  const names = {
    [DisconnectReason.DUPLICATE_IDENTITY]: 'someone joined with the same identity',
    [DisconnectReason.SERVER_SHUTDOWN]: 'the LiveKit server shut down',
    [DisconnectReason.PARTICIPANT_REMOVED]: 'you were removed from the room',
    [DisconnectReason.ROOM_DELETED]: 'the room was closed',
  };
  return names[reason] || 'the connection dropped';
}

async function join(name) {
  clearNotice();
  const info = await fetchJoinInfo(name);
  showModel(info);
  const room = new Room({ adaptiveStream: true, dynacast: true });
  const isAgentIdentity = (identity) => {
    const participant = room.remoteParticipants.get(identity);
    return participant !== undefined && isAgent(participant);
  };
  const transcript = new Transcript($('#transcript'), room, {
    nameOf: (identity) => displayName(room, identity),
    isAgent: isAgentIdentity,
    shows: (identity) =>
      info.audience !== 'private' ||
      identity === room.localParticipant.identity ||
      isAgentIdentity(identity),
  });
  const current = { room, info, transcript, analysers: new Map(), timers: [] };
  wireRoom(current, transcript);
  try {
    await room.connect(info.url, info.token);
  } catch (error) {
    throw new Error(`Cannot connect to LiveKit at ${info.url}: ${error.message || error}`);
  }
  call = current;
  await room.startAudio().catch(() => {});
  $('#join').hidden = true;
  $('#call').hidden = false;
  renderAgent(room, info);
  renderPeople(room);
  renderControls(room);
  watchLevels(current);
  const timeout = window.setTimeout(() => {
    if (call === current && !agentOf(room)) {
      notify(
        `The AI has not joined within ${info.agent_timeout_s} s. ` +
          'Look at the terminal running `room-bridge dev` for the reason.',
        'agent',
      );
    }
  }, info.agent_timeout_s * 1000);
  current.timers.push(timeout);
  await setMicrophone(current, true);
  $('#chat-input').focus();
}

function leave(current) {
  if (call !== current) return;
  call = null;
  for (const timer of current.timers) window.clearInterval(timer);
  for (const key of [...current.analysers.keys()]) removeAnalyser(current, key);
  current.room.unregisterTextStreamHandler(TRANSCRIPTION_TOPIC);
  current.room.unregisterTextStreamHandler(CHAT_TOPIC);
  if (current.room.state !== ConnectionState.Disconnected) current.room.disconnect();
  $('#audio').replaceChildren();
  $('#preview').hidden = true;
  $('#call').hidden = true;
  $('#join').hidden = false;
  $('#join-button').disabled = false;
  $('#name').focus();
}

function start() {
  $('#join').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('#join-button');
    const name = $('#name').value.trim();
    if (!name) {
      notify('Type your name first: the others see it next to what you say.');
      $('#name').focus();
      return;
    }
    button.disabled = true;
    try {
      await join(name);
    } catch (error) {
      notify(error.message || String(error));
      button.disabled = false;
    }
  });
  $('#mic').addEventListener('click', () => {
    if (call) setMicrophone(call, !call.room.localParticipant.isMicrophoneEnabled);
  });
  $('#camera').addEventListener('click', () => {
    if (call) setCamera(call, !call.room.localParticipant.isCameraEnabled);
  });
  $('#leave').addEventListener('click', () => {
    if (call) leave(call);
  });
  $('#chat').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('#chat-input');
    const text = input.value.trim();
    if (!call || !text) return;
    input.value = '';
    try {
      const { room, transcript, info } = call;
      // Private audience: the message is for the AI only.
      const agent = agentOf(room);
      const options = { topic: CHAT_TOPIC };
      if (info.audience === 'private' && agent) options.destinationIdentities = [agent.identity];
      await room.localParticipant.sendText(text, options);
      transcript.chat(room.localParticipant.identity, text);
    } catch (error) {
      notify(`Your message was not sent: ${error.message || error}`);
    }
  });
  window.addEventListener('beforeunload', () => call?.room.disconnect());
  $('#name').focus();
}

start();
