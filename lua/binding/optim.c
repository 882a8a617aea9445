/* towerkit.Optim: the core's optimizers from Lua. */
#include "binding.h"

#include <math.h>

typedef struct tkl_optim {
    tk_optim *o;
} tkl_optim;

static tkl_optim *check_optim(lua_State *L, int idx) {
    tkl_optim *u = (tkl_optim *)luaL_checkudata(L, idx, TKL_OPTIM);
    if (!u->o) tkl_error(L, "bad argument #%d (optimizer has been freed)", idx);
    return u;
}

tk_optim *tkl_check_optim(lua_State *L, int idx) { return check_optim(L, idx)->o; }

static tkl_optim *new_optim_ud(lua_State *L) {
    tkl_optim *u = (tkl_optim *)lua_newuserdata(L, sizeof *u);
    u->o = NULL;
    luaL_getmetatable(L, TKL_OPTIM);
    lua_setmetatable(L, -2);
    return u;
}

/* The option `lazy` (default tk_optim_default_lazy()) at index 1. */
static int finish(lua_State *L, tkl_optim *u, tk_optim *o) {
    if (!o) return tkl_error(L, "%s", tk_last_error());
    u->o = o;
    tk_optim_set_lazy(o, tkl_field_bool(L, 1, "lazy", tk_optim_default_lazy()));
    return 1;
}

/* sgd{learning_rate =, momentum =, nesterov =, weight_decay =, lazy =} */
static int l_sgd(lua_State *L) {
    double lr = tkl_field_number(L, 1, "learning_rate", 0.01);
    double momentum = tkl_field_number(L, 1, "momentum", 0);
    bool nesterov = tkl_field_bool(L, 1, "nesterov", false);
    double wd = tkl_field_number(L, 1, "weight_decay", 0);
    tkl_optim *u = new_optim_ud(L);
    return finish(L, u, tk_optim_sgd_new((float)lr, (float)momentum, nesterov, (float)wd));
}

/* adam{learning_rate =, beta_1 =, beta_2 =, epsilon =, weight_decay =, lazy =} */
static int l_adam(lua_State *L) {
    double lr = tkl_field_number(L, 1, "learning_rate", 0.001);
    double b1 = tkl_field_number(L, 1, "beta_1", 0.9);
    double b2 = tkl_field_number(L, 1, "beta_2", 0.999);
    double eps = tkl_field_number(L, 1, "epsilon", 1e-7);
    double wd = tkl_field_number(L, 1, "weight_decay", 0);
    tkl_optim *u = new_optim_ud(L);
    return finish(L, u, tk_optim_adam_new((float)lr, (float)b1, (float)b2, (float)eps, (float)wd));
}

/* adagrad{learning_rate =, initial_accumulator_value =, epsilon =, lazy =} */
static int l_adagrad(lua_State *L) {
    double lr = tkl_field_number(L, 1, "learning_rate", 0.001);
    double init = tkl_field_number(L, 1, "initial_accumulator_value", 0.1);
    double eps = tkl_field_number(L, 1, "epsilon", 1e-7);
    tkl_optim *u = new_optim_ud(L);
    return finish(L, u, tk_optim_adagrad_new((float)lr, (float)init, (float)eps));
}

static int l_gc(lua_State *L) {
    tkl_optim *u = (tkl_optim *)luaL_checkudata(L, 1, TKL_OPTIM);
    tk_optim_free(u->o);
    u->o = NULL;
    return 0;
}

/* opt:step(params [, ctx]): params is a list of tensors or of {name, tensor} pairs
 * (what block:parameters() returns). Uses the gradients of ctx (default: current). */
static int l_step(lua_State *L) {
    tkl_optim *u = check_optim(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int ctx_idx = 3;
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        tkl_push_current_context(L);
    }
    tk_ctx *ctx = tkl_check_context(L, ctx_idx)->ctx;
    int n = (int)lua_objlen(L, 2);
    tk_tensor **params = (tk_tensor **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *params);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 2);
            lua_remove(L, -2);
        }
        tkl_tensor *t = (tkl_tensor *)luaL_testudata(L, -1, TKL_TENSOR);
        if (!t || !t->t || t->ctx)
            return tkl_error(L, "bad argument #2 to 'step' (entry %d is not a parameter tensor)", i + 1);
        params[i] = t->t;
        lua_pop(L, 1);
    }
    if (tk_optim_step(u->o, ctx, n, params) != TK_OK) {
        if (tk_ctx_failed(ctx)) return tkl_push_result(L, ctx_idx, NULL);
        return tkl_error(L, "%s", tk_last_error());
    }
    return 0;
}

static int l_set_lr(lua_State *L) {
    tkl_optim *u = check_optim(L, 1);
    double lr = luaL_checknumber(L, 2);
    if (!(lr > 0) || !isfinite(lr))
        return tkl_error(L, "bad argument #2 to 'set_lr' (learning rate must be positive, got %g)", lr);
    tk_optim_set_lr(u->o, (float)lr);
    return 0;
}

static int l_lr(lua_State *L) {
    lua_pushnumber(L, tk_optim_lr(check_optim(L, 1)->o));
    return 1;
}

static int l_lazy(lua_State *L) {
    lua_pushboolean(L, tk_optim_lazy(check_optim(L, 1)->o));
    return 1;
}

static int l_steps(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_optim_steps(check_optim(L, 1)->o));
    return 1;
}

static int l_default_lazy(lua_State *L) {
    lua_pushboolean(L, tk_optim_default_lazy());
    return 1;
}

/* clip_grad_norm(max_norm [, ctx]) -> norm before clipping */
static int l_clip_grad_norm(lua_State *L) {
    double max = luaL_checknumber(L, 1);
    if (!(max > 0)) return tkl_error(L, "bad argument #1 to 'clip_grad_norm' (max_norm must be positive)");
    tk_ctx *ctx = lua_isnoneornil(L, 2) ? tkl_push_current_context(L) : tkl_check_context(L, 2)->ctx;
    lua_pushnumber(L, tk_clip_grad_norm(ctx, max));
    return 1;
}

static const luaL_Reg optim_methods[] = { { "step", l_step },   { "set_lr", l_set_lr }, { "lr", l_lr },
                                          { "steps", l_steps }, { "lazy", l_lazy },     { NULL, NULL } };

static const luaL_Reg optim_functions[] = { { "sgd", l_sgd },
                                            { "adam", l_adam },
                                            { "adagrad", l_adagrad },
                                            { "clip_grad_norm", l_clip_grad_norm },
                                            { "optim_default_lazy", l_default_lazy },
                                            { NULL, NULL } };

void tkl_open_optim(lua_State *L) {
    luaL_newmetatable(L, TKL_OPTIM);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, optim_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_register(L, NULL, optim_functions);
}
