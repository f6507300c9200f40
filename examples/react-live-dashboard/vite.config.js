// The dev server and `vite preview` pass /ws and /api to the hub
// (PULSEHUB_URL, default the hub of scripts/demo.sh), so the page and the
// hub share an origin and the hub needs no CORS configuration. A build
// served elsewhere talks to the hub named by ?hub= or VITE_PULSEHUB_URL.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const hub = process.env.PULSEHUB_URL || 'http://127.0.0.1:8080';
const proxy = {
  '/api': { target: hub, changeOrigin: true },
  '/ws': { target: hub, ws: true, changeOrigin: true },
};

export default defineConfig({
  plugins: [react()],
  // @pulsehub/* are linked from this repository (file:); each must use this
  // app's copy of React (and of the client), not one next to its sources.
  resolve: { dedupe: ['react', 'react-dom', '@pulsehub/client'] },
  server: { proxy },
  preview: { proxy },
});
