import { PulseProvider } from '@pulsehub/react';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { LiveDashboard } from './LiveDashboard.jsx';
import { clientOptions, eventId, wsUrl } from './config.js';
import './styles.css';

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <PulseProvider url={wsUrl} options={clientOptions}>
      <main className="page">
        <h1>Event dashboard</h1>
        <LiveDashboard eventId={eventId} />
      </main>
    </PulseProvider>
  </StrictMode>,
);
