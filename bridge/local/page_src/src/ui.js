// Small DOM helpers: one notice area (role=alert) for every failure a person should see.

export function $(selector) {
  const element = document.querySelector(selector);
  if (!element) throw new Error(`page: missing ${selector}`);
  return element;
}

export function notify(message, key = 'general') {
  const notice = $('#notice');
  notice.textContent = message;
  notice.dataset.key = key;
  notice.hidden = false;
}

export function clearNotice(key) {
  const notice = $('#notice');
  if (key === undefined || notice.dataset.key === key) {
    notice.hidden = true;
    notice.textContent = '';
  }
}

export function describeError(error, device) {
  const name = error?.name || '';
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return `No permission to use your ${device}: allow it in the browser's address bar, then press the ${device} button.`;
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return `No ${device} found on this computer.`;
  }
  if (name === 'NotReadableError') {
    return `Your ${device} is busy or unavailable (another program may be using it).`;
  }
  return `Your ${device} could not be started: ${error?.message || error}.`;
}
