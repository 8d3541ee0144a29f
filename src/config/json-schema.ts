// `uplinkd schema`: the JSON Schema of the config file, generated from the
// loader's own zod schema (schema.ts), so an editor checks YAML as written:
// the input side of every transform, each leaf shown by its input form.
// What only load.ts's checks or the parse functions catch (an uplink named by
// a rule, host bits, an unknown user) is beyond it: `uplinkd check` is the judge.

import type { z } from 'zod';
import { zodToJsonSchema, type JsonSchema7Type } from 'zod-to-json-schema';
import { ConfigSchema, inputFormOf, isUnknownKey } from './schema.js';

export function configJsonSchema(): Record<string, unknown> {
  const generated = zodToJsonSchema(ConfigSchema, {
    target: 'jsonSchema7',
    effectStrategy: 'input',
    pipeStrategy: 'input',
    $refStrategy: 'none',
    postProcess: (json, def) => {
      // A strictObject's catch-all reports every key it meets.
      if (isUnknownKey(def)) return false as unknown as JsonSchema7Type;
      const form = inputFormOf(def);
      if (form) return { ...form } as JsonSchema7Type;
      const keyType = (def as z.ZodRecordDef).keyType as z.ZodTypeAny | undefined;
      const keyForm = (def as { typeName?: string }).typeName === 'ZodRecord' && keyType ? inputFormOf(keyType._def) : undefined;
      if (json && keyForm) {
        const { type: _type, description: _description, ...propertyNames } = keyForm;
        return { ...json, propertyNames } as JsonSchema7Type;
      }
      return json;
    },
  });
  const { $schema, ...body } = generated as Record<string, unknown>;
  return {
    $schema,
    title: 'uplinkd configuration (/etc/uplinkd/uplinkd.yaml)',
    description: 'The YAML config of uplinkd, as written (README "Configuration reference"); `uplinkd check` also runs the checks that relate values.',
    ...body,
  };
}
