// The operator's Chat page: GET /. Wires its parts together: the login (login.js), the live
// machine list (machine-stream.js → machine-list.js → machine-row.js), the Quick View
// (quick-view.js), chat windows (open-chat.js) and the operator's options (options-panel.js).
import { byId } from './dom.js';
import { renderLegend } from './status-icons.js';
import { PageError } from './page-error.js';
import { MachineList } from './machine-list.js';
import { MachineStream } from './machine-stream.js';
import { QuickView } from './quick-view.js';
import { ChatOpener } from './open-chat.js';
import { Login } from './login.js';
import { optionsPanel } from './options-panel.js';
import { RolesPanel } from './roles-panel.js';

const errors = new PageError(byId('page-error'));
const loggedOut = () => login.showLogin();
const chats = new ChatOpener(errors, (machine) => list.refresh(machine), loggedOut);
const list = new MachineList(
  { tbody: byId('machines'), count: byId('count'), filter: byId('filter') },
  { chat: (machineId) => chats.start(machineId), join: (sessionId) => chats.join(sessionId) },
);
const stream = new MachineStream({ filter: byId('filter'), live: byId('live') }, list, errors, loggedOut);
const quickView = new QuickView(byId('quickview'), byId('machines'), (id) => list.get(id));
list.onMachine = (m) => quickView.update(m);
list.onRender = () => quickView.closeIfDetached();

const options = optionsPanel();
const roles = new RolesPanel(loggedOut);
const login = new Login({
  loggedIn(me) {
    list.render();
    stream.connect();
    options.load();
    roles.show(!!me.admin);
  },
  loggedOut() {
    roles.show(false);
    stream.disconnect();
    quickView.close();
    list.clear();
  },
});

renderLegend(byId('legend-list'));
login.start();
