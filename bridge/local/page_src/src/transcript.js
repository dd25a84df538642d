// One live transcript of the room: a line per segment, updated in place until final.
//
// The bridge publishes (topic lk.transcription) the model's speech as one delta stream per
// answer, released as its audio plays, and each human's speech as one stream per interim or
// final version of a segment. So: within a stream, chunks add up; a new stream for a segment
// replaces that segment's text. The speaker is whoever owns the transcribed track.

const SEGMENT_ID = 'lk.segment_id';
const TRACK_ID = 'lk.transcribed_track_id';
const FINAL = 'lk.transcription_final';

export class Transcript {
  constructor(list, room, { nameOf, isAgent, shows }) {
    this.list = list;
    this.room = room;
    this.nameOf = nameOf;
    this.isAgent = isAgent;
    this.shows = shows; // whose lines this person sees (private audience: only their own)
    this.lines = new Map();
  }

  speakerOf(trackSid, sender) {
    if (!trackSid) return sender;
    const everyone = [this.room.localParticipant, ...this.room.remoteParticipants.values()];
    for (const participant of everyone) {
      if (participant.trackPublications.has(trackSid)) return participant.identity;
    }
    return sender;
  }

  async fromStream(reader, sender) {
    const attributes = reader.info.attributes || {};
    const segment = attributes[SEGMENT_ID] || reader.info.id;
    const speaker = this.speakerOf(attributes[TRACK_ID], sender);
    if (!this.shows(speaker)) {
      await reader.readAll();
      return;
    }
    const line = this.line(segment, speaker);
    let text = '';
    this.setText(line, text, attributes[FINAL] === 'true');
    for await (const chunk of reader) {
      text += chunk;
      this.setText(line, text, attributes[FINAL] === 'true');
    }
    // An answer's stream closes when its audio has played (or was interrupted): final.
    if (line.classList.contains('agent') || attributes[FINAL] === 'true') {
      this.setText(line, text, true);
    }
  }

  chat(identity, text) {
    if (!this.shows(identity)) return;
    const line = this.line(`chat-${crypto.randomUUID()}`, identity);
    line.classList.add('chat');
    this.setText(line, text, true);
  }

  line(segment, speaker) {
    let line = this.lines.get(segment);
    if (line) return line;
    line = document.createElement('li');
    line.dataset.segment = segment;
    line.dataset.speaker = speaker;
    line.classList.add(this.isAgent(speaker) ? 'agent' : 'human');
    const who = document.createElement('span');
    who.className = 'speaker';
    who.textContent = this.nameOf(speaker);
    const text = document.createElement('span');
    text.className = 'text';
    line.append(who, text);
    const follow = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    this.list.append(line);
    if (follow) this.list.scrollTop = this.list.scrollHeight;
    this.lines.set(segment, line);
    return line;
  }

  // A line can arrive before its speaker's participant info does (a chat message or a transcript
  // sent as someone joins): it is labelled with the identity then, and relabelled here when the
  // name (or the agent's attributes) arrive.
  relabel() {
    for (const line of this.lines.values()) {
      const speaker = line.dataset.speaker;
      line.querySelector('.speaker').textContent = this.nameOf(speaker);
      if (this.isAgent(speaker)) line.classList.replace('human', 'agent');
    }
  }

  setText(line, text, final) {
    line.querySelector('.text').textContent = text;
    if (line.dataset.final !== 'true') line.dataset.final = String(final);
  }
}
