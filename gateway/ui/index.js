// The operator's Chat page: GET /. Wires its parts together: the login (login.js), the live
// stream (machine-stream.js) with the machine list (machine-list.js → machine-row.js), the
// operators online (operator-list.js) and incoming chats (incoming.js, notifications.js), the
// Quick View (quick-view.js), chat windows (open-chat.js), the operator's open chats
// (open-chats.js) and the options (options-panel.js).
import { byId } from './dom.js';
import { renderLegend } from './status-icons.js';
import { PageError } from './page-error.js';
import { MachineList } from './machine-list.js';
import { MachineStream } from './machine-stream.js';
import { QuickView } from './quick-view.js';
import { ChatOpener } from './open-chat.js';
import { Login } from './login.js';
import { optionsPanel } from './options-panel.js';
import { OperatorList } from './operator-list.js';
import { IncomingChats, incomingText } from './incoming.js';
import { IncomingNotifier } from './notifications.js';
import { beep } from './tone.js';
import { RolesPanel } from './roles-panel.js';
import { OpenChats } from './open-chats.js';

const errors = new PageError(byId('page-error'));
const loggedOut = () => login.showLogin();
// A chat with a machine shows Join Session at once, whether or not the stream says so yet.
const chats = new ChatOpener(errors, (view) => { if (view.machine) list.refresh(view.machine); }, loggedOut);
const list = new MachineList(
  { tbody: byId('machines'), count: byId('count'), filter: byId('filter') },
  {
    chat: (machineId, userSession) => chats.start(machineId, userSession),
    join: (sessionId) => chats.join(sessionId),
  },
);
const operators = new OperatorList(
  { list: byId('operators'), empty: byId('operators-empty') },
  (operatorId) => chats.startWithOperator(operatorId),
);
const openChats = new OpenChats({ section: byId('open-chats'), list: byId('open-chats-list') }, (id) => chats.show(id));
const notifier = new IncomingNotifier({ button: byId('notify'), status: byId('notify-status') });
const incoming = new IncomingChats({ panel: byId('incoming'), list: byId('incoming-list') }, {
  answer: (sessionId) => chats.join(sessionId),
  announce(inc) {
    notifier.notify(inc.session, 'Incoming chat', incomingText(inc), () => chats.join(inc.session));
    if (options.options.play_tone) beep();
  },
  gone: (sessionId) => notifier.close(sessionId),
});
const stream = new MachineStream({
  filter: byId('filter'), live: byId('live'),
  pager: byId('pager'), prev: byId('page-prev'), next: byId('page-next'),
}, list, errors, loggedOut, {
  operators: (ops) => operators.replace(ops),
  resync: () => incoming.resync(),
  incoming: (inc) => incoming.add(inc),
  incomingGone: (sessionId) => incoming.remove(sessionId),
});
const quickView = new QuickView(byId('quickview'), byId('machines'), (id) => list.get(id), {
  chat: (machineId, userSession) => chats.start(machineId, userSession),
  join: (sessionId) => chats.join(sessionId),
});
list.onMachine = (m) => quickView.update(m);
list.onRender = () => quickView.closeIfDetached();

const options = optionsPanel();
const roles = new RolesPanel(loggedOut);
const login = new Login({
  loggedIn(me) {
    list.render();
    stream.connect();
    options.load();
    openChats.load(me.id);
    roles.show(!!me.admin);
  },
  loggedOut() {
    roles.show(false);
    stream.disconnect();
    quickView.close();
    list.clear();
    operators.clear();
    incoming.clear();
    openChats.clear();
  },
});

renderLegend(byId('legend-list'));
login.start();
